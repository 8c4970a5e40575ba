//! Softmax over the last dimension with a fused scale, rows in parallel and
//! the exponential vectorised ([`super::math::exp`]); candle's CPU softmax
//! calls the scalar libm `expf` per element.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::exp;
use crate::error::Result;

const LANES: usize = 16;

/// `softmax(scale · x)` over the last dimension of a contiguous f32 CPU tensor.
pub fn scaled_softmax_last_dim(x: &Tensor, scale: f32) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&ScaledSoftmax { scale })?)
}

struct ScaledSoftmax {
    scale: f32,
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "scaled-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("scaled softmax: f32 input expected");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("scaled softmax: contiguous input expected");
        };
        let n = *l.dims().last().unwrap_or(&1);
        let src = &v[start..end];
        let mut out = vec![0f32; src.len()];
        if n > 0 {
            out.par_chunks_mut(n * 64)
                .zip(src.par_chunks(n * 64))
                .for_each(|(d, s)| {
                    for (d, s) in d.chunks_mut(n).zip(s.chunks(n)) {
                        row(s, d, self.scale);
                    }
                });
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[inline(always)]
fn row(src: &[f32], dst: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu_has(super::Precision::F32) {
        // SAFETY: AVX-512F detected.
        return unsafe { row_avx512(src, dst, scale) };
    }
    row_generic(src, dst, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_avx512(src: &[f32], dst: &mut [f32], scale: f32) {
    row_generic(src, dst, scale)
}

/// Lane-wise accumulators so that the compiler vectorises the reductions.
#[inline(always)]
fn row_generic(src: &[f32], dst: &mut [f32], scale: f32) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let chunks = src.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in max.iter_mut().zip(c) {
            *m = m.max(x * scale);
        }
    }
    let mut top = tail.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
    top = max.iter().fold(top, |m, &x| m.max(x));
    let mut sum = [0f32; LANES];
    let mut dchunks = dst.chunks_exact_mut(LANES);
    for (d, s) in (&mut dchunks).zip(src.chunks_exact(LANES)) {
        for ((d, &x), acc) in d.iter_mut().zip(s).zip(sum.iter_mut()) {
            *d = exp(x * scale - top);
            *acc += *d;
        }
    }
    let mut total = 0f32;
    for (d, &x) in dchunks.into_remainder().iter_mut().zip(tail) {
        *d = exp(x * scale - top);
        total += *d;
    }
    let inv = 1.0 / (total + sum.iter().sum::<f32>());
    dst.iter_mut().for_each(|d| *d *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_softmax() {
        for n in [1, 7, 16, 257, 300] {
            let x = Tensor::randn(0f32, 3.0, (5, 3, n), &Device::Cpu).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&(&x * 0.125).unwrap()).unwrap();
            let got = scaled_softmax_last_dim(&x, 0.125).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-6, "n={n}");
        }
    }
}
