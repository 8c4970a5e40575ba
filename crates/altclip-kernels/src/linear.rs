//! A linear layer packed for one kernel: `act(x·Wᵀ + b) + residual` in one
//! GEMM whose epilogue applies the bias, activation and residual while each
//! tile is still in cache.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};

use crate::cpu::Kernel;
use crate::error::{Error, Result};
use crate::gemm::{self, Epilogue, PackedB};
use crate::math::{self, Activation};

/// A linear layer's weight and bias, packed for the kernels.
#[derive(Debug)]
pub struct PackedLinear {
    weight: PackedB,
    bias: Option<Vec<f32>>,
}

impl PackedLinear {
    /// Packs `weight` (`[out, in]`, any float dtype) and `bias` (`[out]`)
    /// for `kernel`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, kernel: Kernel) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = match bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        Self::from_f32(&w, n, k, bias, kernel)
    }

    /// Packs a row-major `[n, k]` weight given as f32, with a bias of `n`.
    pub fn from_f32(
        weight: &[f32],
        n: usize,
        k: usize,
        bias: Option<Vec<f32>>,
        kernel: Kernel,
    ) -> Result<Self> {
        if !kernel.runs_here() && !crate::amx::emulating() {
            return Err(Error::NotOnThisCpu(kernel));
        }
        let bias_len = bias.as_ref().map_or(n, Vec::len);
        if n.checked_mul(k) != Some(weight.len()) || bias_len != n {
            return Err(Error::Unsupported {
                op: "packed linear",
                reason: format!(
                    "a [{n}, {k}] weight cannot hold {} values with a bias of {bias_len}",
                    weight.len()
                ),
            });
        }
        Ok(Self {
            weight: PackedB::pack(weight, n, k, kernel),
            bias,
        })
    }

    /// The kernel the weight is packed for.
    pub fn kernel(&self) -> Kernel {
        self.weight.kernel
    }

    /// Output features (`n`).
    pub fn out_dim(&self) -> usize {
        self.weight.n
    }

    /// Input features (`k`).
    pub fn in_dim(&self) -> usize {
        self.weight.k
    }

    /// The weight (as f32) and bias as tensors, for the candle fallback.
    pub fn unpack(&self, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
        let w = Tensor::from_vec(self.weight.unpack(), (self.weight.n, self.weight.k), device)?;
        let b = match &self.bias {
            Some(b) => Some(Tensor::from_slice(b, b.len(), device)?),
            None => None,
        };
        Ok((w, b))
    }

    /// `act(x·Wᵀ + b) + residual` for contiguous f32 `x` `[.., in]` on the CPU.
    pub fn forward(
        &self,
        x: &Tensor,
        act: Option<Activation>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let x = x.contiguous()?;
        let op = LinearOp { linear: self, act };
        Ok(match residual {
            Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op)?,
            None => x.apply_op1_no_bwd(&op)?,
        })
    }

    fn run(
        &self,
        x: &[f32],
        dims: &[usize],
        act: Option<Activation>,
        residual: Option<&[f32]>,
    ) -> (Vec<f32>, Shape) {
        let (n, k) = (self.weight.n, self.weight.k);
        let m = x.len() / k;
        let epi = Fused {
            kernel: self.kernel(),
            bias: self.bias.as_deref(),
            act,
            residual,
            n,
        };
        let mut out = Vec::<f32>::with_capacity(m * n);
        // SAFETY: `out` has room for m × n floats, each of which `gemm`
        // writes exactly once, before `set_len`; the kernel was checked to
        // run here when the weight was packed.
        unsafe {
            gemm::gemm(
                x,
                k,
                m,
                &self.weight,
                out.as_mut_ptr(),
                n,
                &epi,
                gemm::Threads::Auto,
            );
            out.set_len(m * n);
        }
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank checked") = n;
        (out, Shape::from(shape))
    }
}

/// `act(acc + bias) + residual` on each finished tile, compiled for the
/// instruction set of `kernel`.
pub(crate) struct Fused<'a> {
    pub kernel: Kernel,
    pub bias: Option<&'a [f32]>,
    pub act: Option<Activation>,
    /// Rows of `n` values, indexed by the GEMM's output row.
    pub residual: Option<&'a [f32]>,
    pub n: usize,
}

impl Epilogue for Fused<'_> {
    fn apply(&self, row: usize, col: usize, tile: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel's features were checked when its weight was packed.
        unsafe {
            if self.kernel.avx512() {
                fused_tile_avx512(self, row, col, tile)
            } else {
                fused_tile_avx2(self, row, col, tile)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        fused_tile(self, row, col, tile)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fused_tile_avx512(f: &Fused, row: usize, col: usize, tile: &mut [f32]) {
    fused_tile(f, row, col, tile)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fused_tile_avx2(f: &Fused, row: usize, col: usize, tile: &mut [f32]) {
    fused_tile(f, row, col, tile)
}

/// Compiled once per instruction set through the wrappers above.
#[inline(always)]
fn fused_tile(f: &Fused, row: usize, col: usize, tile: &mut [f32]) {
    if let Some(b) = f.bias {
        for (t, b) in tile.iter_mut().zip(&b[col..]) {
            *t += b;
        }
    }
    if let Some(act) = f.act {
        math::activate_slice(act, tile);
    }
    if let Some(r) = f.residual {
        for (t, r) in tile.iter_mut().zip(&r[row * f.n + col..]) {
            *t += r;
        }
    }
}

struct LinearOp<'a> {
    linear: &'a PackedLinear,
    act: Option<Activation>,
}

/// The contiguous f32 data of a CPU tensor whose last dimension is `k`.
pub(crate) fn f32_input<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    k: usize,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("packed linear: {what} must be f32, got {:?}", s.dtype());
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("packed linear: {what} must be contiguous");
    };
    if l.dims().last() != Some(&k) {
        candle_core::bail!(
            "packed linear: {what} has shape {:?}, expected last dimension {k}",
            l.dims()
        );
    }
    Ok(&v[start..end])
}

impl CustomOp1 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_input(s, l, self.linear.in_dim(), "input")?;
        let (out, shape) = self.linear.run(x, l.dims(), self.act, None);
        Ok((CpuStorage::F32(out), shape))
    }
}

impl CustomOp2 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "packed-linear-residual"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_input(s, l, self.linear.in_dim(), "input")?;
        let r = f32_input(rs, rl, self.linear.out_dim(), "residual")?;
        if r.len() / self.linear.out_dim() != x.len() / self.linear.in_dim() {
            candle_core::bail!(
                "packed linear: residual {:?} does not match input {:?}",
                rl.dims(),
                l.dims()
            );
        }
        let (out, shape) = self.linear.run(x, l.dims(), self.act, Some(r));
        Ok((CpuStorage::F32(out), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{as_seen_by, lcg, max_diff, reference, Operand};
    use crate::cpu::Precision;
    use candle_core::Device;

    /// The kernels this CPU runs, with a skip line for each other one.
    fn runnable() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| {
                let runs = k.runs_here();
                if !runs {
                    eprintln!("{}", k.skip_line());
                }
                runs
            })
            .collect()
    }

    fn check(kernel: Kernel, m: usize, n: usize, k: usize, tol: f32) {
        let dev = Device::Cpu;
        let (x, w, b, r) = (lcg(m * k, 1), lcg(n * k, 2), lcg(n, 3), lcg(m * n, 4));
        // The bf16 kernel rounds its inputs: compare with rounded inputs.
        let (xr, wr) = (
            as_seen_by(kernel, &x, k, Operand::A),
            as_seen_by(kernel, &w, k, Operand::B),
        );
        let want = reference(&xr, &wr, &b, &r, m, n, k, Activation::GeluErf);
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let bt = Tensor::from_vec(b, n, &dev).unwrap();
        let lin = PackedLinear::new(&wt, Some(&bt), kernel).unwrap();
        let xt = Tensor::from_vec(x, (1, m, k), &dev).unwrap();
        let rt = Tensor::from_vec(r, (1, m, n), &dev).unwrap();
        let got = lin
            .forward(&xt, Some(Activation::GeluErf), Some(&rt))
            .unwrap();
        assert_eq!(got.dims(), &[1, m, n]);
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = max_diff(&got, &want);
        assert!(worst < tol, "{kernel:?} m={m} n={n} k={k}: max |Δ| {worst}");
        // Unpacking gives the weight the kernel multiplies by.
        let (w2, _) = lin.unpack(&dev).unwrap();
        let unpacked = w2.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        match kernel.precision() {
            Precision::F32 => assert_eq!(
                unpacked,
                wt.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            ),
            _ => assert!(max_diff(&unpacked, &wr) < 1e-6, "{kernel:?} unpack"),
        }
    }

    #[test]
    fn every_kernel_matches_reference_on_ragged_shapes() {
        // Row remainders (1..12), partial panels, K across block boundaries
        // and odd K (bf16 pairs).
        for kernel in runnable() {
            for (m, n, k) in [
                (1, 32, 8),
                (13, 37, 300),
                (13, 37, 301),
                (25, 96, 513),
                (7, 5, 3),
                (64, 160, 1030),
                (97, 64, 1100),
            ] {
                check(kernel, m, n, k, 2e-5 * (k as f32).sqrt());
            }
        }
    }

    #[test]
    fn empty_batch_gives_an_empty_output() {
        for kernel in runnable() {
            let dev = Device::Cpu;
            let w = Tensor::ones((40, 24), DType::F32, &dev).unwrap();
            let lin = PackedLinear::new(&w, None, kernel).unwrap();
            let x = Tensor::zeros((0, 3, 24), DType::F32, &dev).unwrap();
            assert_eq!(lin.forward(&x, None, None).unwrap().dims(), &[0, 3, 40]);
        }
    }

    #[test]
    fn multithreaded_split_matches_reference() {
        // Big enough to take the parallel path.
        for kernel in runnable() {
            check(kernel, 70, 200, 300, 5e-4);
        }
    }

    #[test]
    fn mismatched_weights_are_refused() {
        let Some(kernel) = runnable().into_iter().next() else {
            return;
        };
        let err = PackedLinear::from_f32(&[0.0; 10], 3, 4, None, kernel).unwrap_err();
        assert!(err.to_string().contains("[3, 4] weight"), "{err}");
        let err = PackedLinear::from_f32(&[0.0; 12], 3, 4, Some(vec![0.0; 2]), kernel).unwrap_err();
        assert!(err.to_string().contains("bias of 2"), "{err}");
    }
}
