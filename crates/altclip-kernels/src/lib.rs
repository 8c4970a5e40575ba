//! CPU compute kernels for transformer and diffusion inference: a
//! packed-weight GEMM with a fused epilogue (bias, activation, residual),
//! convolutions on it (channels last), multi-head attention that reads a
//! stacked q/k/v projection in place (whole, or in query blocks), group
//! normalisation and a vectorised softmax.
//!
//! The crate owns everything unsafe and instruction-set specific, and knows
//! nothing of any model: callers pick a [`Kernel`] once (usually
//! [`Kernel::select`]), pack each weight for it with [`PackedLinear`], and
//! run the layers on contiguous f32 candle tensors on the CPU. There is no
//! backward pass; training uses candle's matmul.
//!
//! Kernels: AVX2 + FMA and AVX-512F for f32, AVX512-BF16 (`vdpbf16ps`: bf16
//! products, f32 sums) for bf16, AVX512-VNNI (`vpdpbusd`: u8 × i8 products,
//! i32 sums, dequantised in the epilogue) for int8, and AMX (`tdpbf16ps`,
//! `tdpbusd` on 32×32 tiles) for both where the CPU has it. [`Kernel::select`]
//! checks each kernel on a small layer before first use (AMX in a child
//! process first, so a faulting kernel cannot take the process down);
//! `ALTCLIP_KERNELS=candle` makes it pick none, and a kernel's
//! [`Kernel::flag_name`] (e.g. `avx2`) that kernel only.

mod amx;
mod attention;
mod check;
mod conv;
mod cpu;
mod data;
mod error;
mod geglu;
mod gemm;
mod group_norm;
mod linear;
mod math;
mod micro;
mod softmax;
mod threads;

pub use attention::{attention, attention_blocked, mask_supported};
pub use conv::{ConvGeometry, PackedConv2d, PackedUpsampleConv2d};
pub use cpu::{Kernel, Precision};
pub use error::{Error, Result};
pub use geglu::geglu;
pub use group_norm::group_norm;
pub use linear::PackedLinear;
pub use math::Activation;
pub use softmax::softmax_in_place;
pub use threads::{init_threads, physical_cores};
