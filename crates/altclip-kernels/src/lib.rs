//! CPU compute kernels for transformer inference: a packed-weight GEMM with
//! a fused epilogue (bias, activation, residual), multi-head attention that
//! reads a stacked q/k/v projection in place, and a vectorised softmax.
//!
//! The crate owns everything unsafe and instruction-set specific, and knows
//! nothing of any model: callers pick a [`Kernel`] once (usually
//! [`Kernel::select`]), pack each weight for it with [`PackedLinear`], and
//! run the layers on contiguous f32 candle tensors on the CPU. There is no
//! backward pass; training uses candle's matmul.
//!
//! Kernels: AVX2 + FMA and AVX-512F for f32, AVX512-BF16 (`vdpbf16ps`: bf16
//! products, f32 sums) for bf16. `ALTCLIP_KERNELS=candle` makes
//! [`Kernel::select`] pick none, `=avx2` the AVX2 kernel only.

mod attention;
mod cpu;
mod error;
mod gemm;
mod linear;
mod math;
mod micro;
mod softmax;

pub use attention::{attention, mask_supported};
pub use cpu::{Kernel, Precision};
pub use error::{Error, Result};
pub use linear::PackedLinear;
pub use math::Activation;
pub use softmax::softmax_in_place;

#[cfg(test)]
mod testutil {
    /// Deterministic values in [-0.5, 0.5).
    pub fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The largest element-wise |a − b|.
    pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }
}
