//! Softmax of one row of attention scores, with the scale and mask fused
//! and the exponential vectorised ([`super::math::exp`]); candle's CPU
//! softmax calls the scalar libm `expf` per element.

use super::math::exp;
use super::Kernel;

const LANES: usize = 16;

/// `row ← softmax(scale·row + mask)`, for one row of attention scores,
/// compiled for `kernel`'s instruction set (which must run on this CPU).
pub fn softmax_in_place(row: &mut [f32], scale: f32, mask: Option<&[f32]>, kernel: Kernel) {
    let scale = match mask {
        Some(m) => {
            for (x, m) in row.iter_mut().zip(m) {
                *x = *x * scale + m;
            }
            1.0
        }
        None => scale,
    };
    assert!(kernel.runs_here(), "{kernel:?} softmax on a CPU without it");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel's features are present (asserted above).
    unsafe {
        if kernel.avx512() {
            row_avx512(row, scale)
        } else {
            row_avx2(row, scale)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    row_generic(row, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_avx512(v: &mut [f32], scale: f32) {
    row_generic(v, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_avx2(v: &mut [f32], scale: f32) {
    row_generic(v, scale)
}

/// `v ← softmax(scale·v)`, with lane-wise accumulators so that the compiler
/// vectorises the reductions.
#[inline(always)]
fn row_generic(v: &mut [f32], scale: f32) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in max.iter_mut().zip(c) {
            *m = m.max(x * scale);
        }
    }
    let mut top = tail
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
    top = max.iter().fold(top, |m, &x| m.max(x));
    let mut sum = [0f32; LANES];
    let mut chunks = v.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (x, acc) in c.iter_mut().zip(sum.iter_mut()) {
            *x = exp(*x * scale - top);
            *acc += *x;
        }
    }
    let mut total = 0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x * scale - top);
        total += *x;
    }
    let inv = 1.0 / (total + sum.iter().sum::<f32>());
    v.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_candle_softmax() {
        for kernel in Kernel::ALL {
            if !kernel.runs_here() {
                eprintln!("{}", kernel.skip_line());
                continue;
            }
            check(kernel);
        }
    }

    fn check(kernel: Kernel) {
        for n in [1, 7, 16, 257, 300] {
            let x = Tensor::randn(0f32, 3.0, (1, n), &Device::Cpu).unwrap();
            let mask: Vec<f32> = (0..n)
                .map(|i| if i % 5 == 4 { f32::MIN } else { 0.0 })
                .collect();
            let m = Tensor::from_slice(&mask, (1, n), &Device::Cpu).unwrap();
            let want =
                candle_nn::ops::softmax_last_dim(&((&x * 0.125).unwrap() + &m).unwrap()).unwrap();
            let mut got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            softmax_in_place(&mut got, 0.125, Some(&mask), kernel);
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = crate::check::max_diff(&got, &want);
            assert!(diff < 1e-6, "{kernel:?} n={n}: {diff}");
        }
    }
}
