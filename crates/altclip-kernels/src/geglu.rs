//! GEGLU, the gated feed-forward activation of diffusion transformers:
//! the second half of each row gates the first through exact GELU.

use std::mem::MaybeUninit;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::data::with_contiguous;
use crate::error::{Error, Result};
use crate::math::gelu_erf;

/// `x[.., :n] · gelu(x[.., n:])` for `x` `[.., 2n]` (f32 on the CPU).
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let two_n = dims.last().copied().unwrap_or(0);
    if two_n % 2 != 0 || two_n == 0 {
        return Err(Error::Unsupported {
            op: "geglu",
            reason: format!("input {dims:?}: the last dimension must be even"),
        });
    }
    let n = two_n / 2;
    let x = x.contiguous()?;
    let out = with_contiguous(&x, "geglu", "input", |v| {
        // Not zeroed first (see group_norm).
        let len = v.len() / 2;
        let mut out = Vec::<f32>::with_capacity(len);
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(n)
            .zip(v.par_chunks(two_n))
            .for_each(|(o, row)| gate(o, row));
        // SAFETY: each of the len outputs was written once above.
        unsafe { out.set_len(len) };
        out
    })?;
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("checked non-empty") = n;
    Ok(Tensor::from_vec(out, shape, x.device())?)
}

fn gate(out: &mut [MaybeUninit<f32>], row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { gate_avx512(out, row) };
    }
    gate_generic(out, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gate_avx512(out: &mut [MaybeUninit<f32>], row: &[f32]) {
    gate_generic(out, row)
}

#[inline(always)]
fn gate_generic(out: &mut [MaybeUninit<f32>], row: &[f32]) {
    let (h, g) = row.split_at(out.len());
    for ((o, &h), &g) in out.iter_mut().zip(h).zip(g) {
        o.write(h * gelu_erf(g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn matches_candle() {
        let x = Tensor::randn(0f32, 2.0, (3, 5, 14), &Device::Cpu).unwrap();
        let parts = x.chunk(2, D::Minus1).unwrap();
        let want = (&parts[0] * parts[1].gelu_erf().unwrap()).unwrap();
        let got = geglu(&x).unwrap();
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(geglu(&Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
