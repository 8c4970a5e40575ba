//! Group normalisation of channels-last tensors, with the SiLU that follows
//! it in every diffusion ResNet fused into the same pass.

use std::mem::MaybeUninit;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::data::with_contiguous;
use crate::error::{Error, Result};
use crate::math::sigmoid;

/// Pixels each task reduces or normalises.
const CHUNK: usize = 256;

/// `GroupNorm(groups, eps)` of `x` `[B, ..., C]` (channels last, any number
/// of positions per sample) with per-channel `weight` and `bias`, then SiLU
/// when `silu`. Statistics accumulate in f64.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    eps: f64,
    weight: &[f32],
    bias: &[f32],
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims();
    let c = dims.last().copied().unwrap_or(0);
    if dims.len() < 2 || groups == 0 || c % groups != 0 || weight.len() != c || bias.len() != c {
        return Err(Error::Unsupported {
            op: "group norm",
            reason: format!(
                "input {dims:?} in {groups} groups with {} weights and {} biases",
                weight.len(),
                bias.len()
            ),
        });
    }
    let b = dims[0];
    let x = x.contiguous()?;
    let out = with_contiguous(&x, "group norm", "input", |v| {
        let per_sample = (v.len() / b.max(1)).max(1);
        // Not zeroed first: a zeroed allocation this large comes as fresh
        // pages from the kernel every time, which then clears them.
        let mut out = Vec::<f32>::with_capacity(v.len());
        out.spare_capacity_mut()[..v.len()]
            .par_chunks_mut(per_sample)
            .zip(v.par_chunks(per_sample))
            .for_each(|(o, xs)| {
                let (scale, shift) = affine(xs, c, groups, eps, weight, bias);
                o.par_chunks_mut(CHUNK * c)
                    .zip(xs.par_chunks(CHUNK * c))
                    .for_each(|(o, xs)| normalise(o, xs, &scale, &shift, silu));
            });
        // SAFETY: the chunks above cover all v.len() elements, each written once.
        unsafe { out.set_len(v.len()) };
        out
    })?;
    Ok(Tensor::from_vec(out, dims, x.device())?)
}

/// Per channel, the `(scale, shift)` that normalise one sample `xs`:
/// `y = x·scale + shift`.
fn affine(
    xs: &[f32],
    c: usize,
    groups: usize,
    eps: f64,
    weight: &[f32],
    bias: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let zero = || (vec![0f64; c], vec![0f64; c]);
    let (sum, sq) = xs
        .par_chunks(CHUNK * c)
        .fold(zero, |(mut s, mut q), chunk| {
            for pixel in chunk.chunks_exact(c) {
                for ((s, q), &x) in s.iter_mut().zip(q.iter_mut()).zip(pixel) {
                    let x = x as f64;
                    *s += x;
                    *q += x * x;
                }
            }
            (s, q)
        })
        .reduce(zero, |(mut s, mut q), (s2, q2)| {
            s.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
            q.iter_mut().zip(&q2).for_each(|(a, b)| *a += b);
            (s, q)
        });
    let per_group = c / groups;
    let count = (xs.len() / c * per_group).max(1) as f64;
    let mut scale = vec![0f32; c];
    let mut shift = vec![0f32; c];
    for g in 0..groups {
        let span = g * per_group..(g + 1) * per_group;
        let mean = sum[span.clone()].iter().sum::<f64>() / count;
        let var = (sq[span.clone()].iter().sum::<f64>() / count - mean * mean).max(0.0);
        let rstd = 1.0 / (var + eps).sqrt();
        for ch in span {
            let a = rstd * weight[ch] as f64;
            scale[ch] = a as f32;
            shift[ch] = (bias[ch] as f64 - mean * a) as f32;
        }
    }
    (scale, shift)
}

fn normalise(out: &mut [MaybeUninit<f32>], xs: &[f32], scale: &[f32], shift: &[f32], silu: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { normalise_avx512(out, xs, scale, shift, silu) };
    }
    normalise_generic(out, xs, scale, shift, silu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn normalise_avx512(
    out: &mut [MaybeUninit<f32>],
    xs: &[f32],
    scale: &[f32],
    shift: &[f32],
    silu: bool,
) {
    normalise_generic(out, xs, scale, shift, silu)
}

#[inline(always)]
fn normalise_generic(
    out: &mut [MaybeUninit<f32>],
    xs: &[f32],
    scale: &[f32],
    shift: &[f32],
    silu: bool,
) {
    let c = scale.len();
    for (o, x) in out.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
        let pixel = o.iter_mut().zip(x).zip(scale).zip(shift);
        if silu {
            for (((o, &x), &a), &b) in pixel {
                let y = x * a + b;
                o.write(y * sigmoid(y));
            }
        } else {
            for (((o, &x), &a), &b) in pixel {
                o.write(x * a + b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The textbook formula with candle ops on `[B, C, L]`.
    fn reference(x: &Tensor, groups: usize, eps: f64, w: &Tensor, b: &Tensor) -> Tensor {
        let (n, c, l) = x.dims3().unwrap();
        let g = x.reshape((n, groups, c / groups * l)).unwrap();
        let mean = g.mean_keepdim(D::Minus1).unwrap();
        let centred = g.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let y = centred
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .reshape((n, c, l))
            .unwrap();
        y.broadcast_mul(&w.reshape((1, c, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1)).unwrap())
            .unwrap()
    }

    #[test]
    fn matches_the_formula_with_and_without_silu() {
        let dev = Device::Cpu;
        let (n, c, l, groups) = (2, 12, 700, 3);
        // An offset mean, where a one-pass variance in f32 would lose digits.
        let x = (Tensor::randn(0f32, 2.0, (n, c, l), &dev).unwrap() + 30.0).unwrap();
        let w = Tensor::randn(1f32, 0.5, c, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.5, c, &dev).unwrap();
        // The reference in f64: in f32 its own rounding at this offset is
        // about 1e-5, the tolerance.
        let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let want = reference(&f64_of(&x), groups, 1e-6, &f64_of(&w), &f64_of(&b));
        let (wv, bv) = (w.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        let nhwc = x.transpose(1, 2).unwrap().contiguous().unwrap();
        for silu in [false, true] {
            let got = group_norm(&nhwc, groups, 1e-6, &wv, &bv, silu)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
            let want = if silu {
                candle_nn::ops::silu(&want).unwrap()
            } else {
                want.clone()
            };
            let d = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "silu {silu}: max |Δ| {d}");
        }
    }

    #[test]
    fn refuses_channels_that_do_not_split_into_groups() {
        let x = Tensor::zeros((1, 4, 6), DType::F32, &Device::Cpu).unwrap();
        let err = group_norm(&x, 4, 1e-5, &[1.0; 6], &[0.0; 6], false).unwrap_err();
        assert!(err.to_string().contains("4 groups"), "{err}");
    }
}
