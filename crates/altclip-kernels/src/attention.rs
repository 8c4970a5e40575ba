//! Multi-head attention on the CPU straight from the fused q/k/v projection:
//! heads run in parallel, each computing `softmax(scale·QKᵀ + mask)·V` with
//! the GEMM kernels, reading Q, K and V in place (no head split or merge
//! copies) and writing its slice of the merged `[B, L, D]` output.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::Kernel;
use crate::error::{Error, Result};
use crate::gemm::{self, Epilogue, OutPtr, PackedB, Threads};
use crate::linear::f32_input;
use crate::softmax::softmax_in_place;

/// No epilogue: the raw products.
struct Plain;

impl Epilogue for Plain {
    fn apply(&self, _: usize, _: usize, _: &mut [f32]) {}
}

/// True when [`attention`] takes this additive mask: `[B, 1, 1, L]`
/// (padding) or `[B, 1, L, L]` (causal), f32.
pub fn mask_supported(mask: Option<&Tensor>, b: usize, l: usize) -> bool {
    mask.is_none_or(|m| {
        m.dtype() == candle_core::DType::F32
            && (m.dims() == [b, 1, 1, l] || m.dims() == [b, 1, l, l])
    })
}

/// `qkv`: `[B, L, 3·D]` f32 on the CPU (queries, keys, values side by side);
/// returns the attention output `[B, L, D]`, heads merged, with the products
/// computed by `kernel`.
pub fn attention(
    qkv: &Tensor,
    heads: usize,
    scale: f32,
    mask: Option<&Tensor>,
    kernel: Kernel,
) -> Result<Tensor> {
    if !kernel.runs_here() {
        return Err(Error::NotOnThisCpu(kernel));
    }
    let (b, l, d3) = qkv.dims3()?;
    let d = d3 / 3;
    if heads == 0 || d3 % 3 != 0 || d % heads != 0 || !mask_supported(mask, b, l) {
        return Err(Error::Unsupported {
            op: "attention",
            reason: format!(
                "qkv {:?} with {heads} heads and mask {:?}",
                qkv.dims(),
                mask.map(|m| m.dims().to_vec())
            ),
        });
    }
    let mask = match mask {
        Some(m) => Some((m.flatten_all()?.to_vec1::<f32>()?, m.dim(2)? == l)),
        None => None,
    };
    let op = AttentionOp {
        heads,
        scale,
        mask,
        kernel,
    };
    Ok(qkv.contiguous()?.apply_op1_no_bwd(&op)?)
}

/// The kernel as a candle op, so that it reads the projection's storage in
/// place; `mask` holds the additive mask and whether it has a row per query.
struct AttentionOp {
    heads: usize,
    scale: f32,
    mask: Option<(Vec<f32>, bool)>,
    kernel: Kernel,
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[b, l, d3] = layout.dims() else {
            candle_core::bail!(
                "attention kernel: qkv must be [B, L, 3D], got {:?}",
                layout.dims()
            );
        };
        let x = f32_input(s, layout, d3, "qkv")?;
        let (heads, scale, kernel) = (self.heads, self.scale, self.kernel.float_kernel());
        let d = d3 / 3;
        let dh = d / heads;
        let mut out = vec![0f32; b * l * d];
        let out_ptr = OutPtr(out.as_mut_ptr());
        (0..b * heads).into_par_iter().for_each(|task| {
            let (bi, h) = (task / heads, task % heads);
            let base = bi * l * d3 + h * dh;
            let keys = PackedB::pack_strided(&x[base + d..], l, dh, (d3, 1), kernel);
            let mut scores = Vec::<f32>::with_capacity(l * l);
            // SAFETY: `scores` has room for l × l floats, all of which the
            // GEMM writes.
            unsafe {
                let q = &x[base..];
                gemm::gemm(
                    q,
                    d3,
                    l,
                    &keys,
                    scores.as_mut_ptr(),
                    l,
                    &Plain,
                    Threads::One,
                );
                scores.set_len(l * l);
            }
            for (i, row) in scores.chunks_mut(l).enumerate() {
                let m = self.mask.as_ref().map(|(m, per_row)| match per_row {
                    true => &m[(bi * l + i) * l..][..l],
                    false => &m[bi * l..][..l],
                });
                softmax_in_place(row, scale, m, kernel);
            }
            let values = PackedB::pack_strided(&x[base + 2 * d..], dh, l, (1, d3), kernel);
            let dst = out_ptr.get().wrapping_add(bi * l * d + h * dh);
            // SAFETY: this task alone writes this head's dh columns of its
            // sequence's l output rows (d apart).
            unsafe { gemm::gemm(&scores, l, l, &values, dst, d, &Plain, Threads::One) };
        });
        Ok((CpuStorage::F32(out), Shape::from((b, l, d))))
    }
}

/// Queries per task of [`attention_blocked`]: a multiple of every kernel's
/// tile rows; its scores (`96 × Lk` floats) stay in L2 for the `PV` product.
const QUERY_BLOCK: usize = 96;

/// `softmax(scale·QKᵀ)·V` per head for separate queries `[B, Lq, D]` and
/// keys and values `[B, Lk, D]`, which may be column slices (`narrow`) of
/// one stacked projection. Keys and values are packed once per head; query
/// blocks then run in parallel, each holding only its block's scores, so
/// the memory is `O(block · Lk)` per thread rather than `Lq · Lk` per head
/// (at 64×64 latents, 4096 queries: 1.5 MiB instead of 64 MiB).
pub fn attention_blocked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
    kernel: Kernel,
) -> Result<Tensor> {
    if !kernel.runs_here() {
        return Err(Error::NotOnThisCpu(kernel));
    }
    let kernel = kernel.float_kernel();
    let refuse = |reason: String| Error::Unsupported {
        op: "blocked attention",
        reason,
    };
    let (b, lq, d) = q.dims3()?;
    let (bk, lk, dk) = k.dims3()?;
    if heads == 0 || d % heads != 0 || bk != b || dk != d || v.dims() != k.dims() || lk == 0 {
        return Err(refuse(format!(
            "q {:?}, k {:?}, v {:?} with {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    let dh = d / heads;
    // Rows may be any distance apart (`narrow` of a stacked projection);
    // columns must be adjacent.
    let strides = |t: &Tensor, what: &str| match t.stride() {
        &[s0, s1, 1] => Ok((s0, s1)),
        s => Err(refuse(format!(
            "{what} must have adjacent columns, got strides {s:?}"
        ))),
    };
    let (qs, ks, vs) = (strides(q, "q")?, strides(k, "k")?, strides(v, "v")?);
    let packed: Vec<(PackedB, PackedB)> =
        crate::data::with_f32(k, "blocked attention", "k", |kd, _| {
            crate::data::with_f32(v, "blocked attention", "v", |vd, _| {
                (0..b * heads)
                    .into_par_iter()
                    .map(|task| {
                        let (bi, h) = (task / heads, task % heads);
                        let keys = PackedB::pack_strided(
                            &kd[bi * ks.0 + h * dh..],
                            lk,
                            dh,
                            (ks.1, 1),
                            kernel,
                        );
                        let values = PackedB::pack_strided(
                            &vd[bi * vs.0 + h * dh..],
                            dh,
                            lk,
                            (1, vs.1),
                            kernel,
                        );
                        (keys, values)
                    })
                    .collect()
            })
        })??;
    let blocks = lq.div_ceil(QUERY_BLOCK);
    let mut out = Vec::<f32>::with_capacity(b * lq * d);
    let out_ptr = OutPtr(out.as_mut_ptr());
    crate::data::with_f32(q, "blocked attention", "q", |qd, _| {
        (0..b * heads * blocks).into_par_iter().for_each(|task| {
            let (bh, block) = (task / blocks, task % blocks);
            let (bi, h) = (bh / heads, bh % heads);
            let (keys, values) = &packed[bh];
            let first = block * QUERY_BLOCK;
            let m = QUERY_BLOCK.min(lq - first);
            let mut scores = SCORES.take();
            scores.resize(m * lk, 0.0);
            let a = &qd[bi * qs.0 + first * qs.1 + h * dh..];
            // SAFETY: `scores` holds m × lk floats; the kernel runs here
            // (checked on entry).
            unsafe {
                gemm::gemm(
                    a,
                    qs.1,
                    m,
                    keys,
                    scores.as_mut_ptr(),
                    lk,
                    &Plain,
                    Threads::One,
                )
            };
            for row in scores[..m * lk].chunks_mut(lk) {
                softmax_in_place(row, scale, None, kernel);
            }
            let dst = out_ptr.get().wrapping_add((bi * lq + first) * d + h * dh);
            // SAFETY: this task alone writes this head's dh columns of its
            // block's m output rows (d apart).
            unsafe { gemm::gemm(&scores, lk, m, values, dst, d, &Plain, Threads::One) };
            SCORES.set(scores);
        })
    })?;
    // SAFETY: the tasks above wrote every head's columns of every row.
    unsafe { out.set_len(b * lq * d) };
    Ok(Tensor::from_vec(out, (b, lq, d), q.device())?)
}

thread_local! {
    /// Each thread's block of scores, reused across calls.
    static SCORES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The textbook formula with candle ops.
    fn reference(qkv: &Tensor, heads: usize, scale: f64, mask: Option<&Tensor>) -> Tensor {
        let (b, l, d3) = qkv.dims3().unwrap();
        let d = d3 / 3;
        let split = |i: usize| {
            qkv.narrow(2, i * d, d)
                .unwrap()
                .reshape((b, l, heads, d / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        if let Some(m) = mask {
            s = s.broadcast_add(m).unwrap();
        }
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, l, d))
            .unwrap()
    }

    fn check(kernel: Kernel, b: usize, l: usize, heads: usize, dh: usize, causal: bool, tol: f32) {
        if !kernel.runs_here() {
            eprintln!("{}", kernel.skip_line());
            return;
        }
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (b, l, 3 * heads * dh), &dev).unwrap();
        let mask = if causal {
            let m: Vec<f32> = (0..b * l * l)
                .map(|i| if (i % l) > (i / l) % l { f32::MIN } else { 0.0 })
                .collect();
            Tensor::from_vec(m, (b, 1, l, l), &dev).unwrap()
        } else {
            // Padding: the last two keys of every sequence but the first.
            let m: Vec<f32> = (0..b * l)
                .map(|i| {
                    if i / l > 0 && i % l >= l - 2 {
                        f32::MIN
                    } else {
                        0.0
                    }
                })
                .collect();
            Tensor::from_vec(m, (b, 1, 1, l), &dev).unwrap()
        };
        let scale = (dh as f64).powf(-0.5);
        let want = reference(&qkv, heads, scale, Some(&mask));
        let got = attention(&qkv, heads, scale as f32, Some(&mask), kernel).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(
            diff < tol,
            "{kernel:?} b={b} l={l} heads={heads} dh={dh}: max |Δ| {diff}"
        );
    }

    #[test]
    fn matches_the_formula() {
        for causal in [false, true] {
            for f32_kernel in [Kernel::Avx512, Kernel::Avx2] {
                check(f32_kernel, 2, 13, 2, 32, causal, 1e-5);
                check(f32_kernel, 1, 40, 3, 8, causal, 1e-5);
            }
            for bf16_kernel in [Kernel::Avx512Bf16, Kernel::AmxBf16] {
                check(bf16_kernel, 2, 37, 2, 64, causal, 3e-2);
            }
        }
    }

    /// Separate queries against keys and values sliced from one stacked
    /// projection, past several query blocks, for self and cross attention.
    #[test]
    fn blocked_attention_matches_the_formula() {
        let dev = Device::Cpu;
        for kernel in [
            Kernel::Avx512,
            Kernel::Avx2,
            Kernel::Avx512Bf16,
            Kernel::AmxBf16,
        ] {
            if !kernel.runs_here() {
                eprintln!("{}", kernel.skip_line());
                continue;
            }
            let tol = if kernel.precision() == crate::Precision::F32 {
                1e-5
            } else {
                3e-2
            };
            let (b, heads, dh) = (2, 3, 8);
            let d = heads * dh;
            for (lq, lk) in [(200, 200), (250, 7)] {
                let q = Tensor::randn(0f32, 1.0, (b, lq, d), &dev).unwrap();
                let kv = Tensor::randn(0f32, 1.0, (b, lk, 2 * d), &dev).unwrap();
                let (k, v) = (kv.narrow(2, 0, d).unwrap(), kv.narrow(2, d, d).unwrap());
                let split = |t: &Tensor, l: usize| {
                    t.reshape((b, l, heads, dh))
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                        .contiguous()
                        .unwrap()
                };
                let scale = (dh as f64).powf(-0.5);
                let s = (split(&q, lq)
                    .matmul(&split(&k.contiguous().unwrap(), lk).t().unwrap())
                    .unwrap()
                    * scale)
                    .unwrap();
                let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
                let want = p
                    .matmul(&split(&v.contiguous().unwrap(), lk))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b, lq, d))
                    .unwrap();
                let got = attention_blocked(&q, &k, &v, heads, scale as f32, kernel).unwrap();
                let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
                let diff = diff.to_scalar::<f32>().unwrap();
                assert!(diff < tol, "{kernel:?} lq={lq} lk={lk}: max |Δ| {diff}");
            }
        }
    }
}
