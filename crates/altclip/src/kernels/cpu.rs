//! Which instruction set the kernels run with on this CPU.

use std::sync::OnceLock;

/// The instruction sets the f32 kernels are built for; bf16 needs AVX-512
/// with AVX512-BF16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 12×32 tiles in zmm registers.
    Avx512,
    /// AVX2 + FMA: 6×16 tiles in ymm registers.
    Avx2,
}

/// What the hardware offers, ignoring `ALTCLIP_KERNELS` (detected once).
pub fn detected() -> (Option<Isa>, bool) {
    static FOUND: OnceLock<(Option<Isa>, bool)> = OnceLock::new();
    *FOUND.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> (Option<Isa>, bool) {
    let avx512 = is_x86_feature_detected!("avx512f");
    let isa = if avx512 {
        Some(Isa::Avx512)
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(Isa::Avx2)
    } else {
        None
    };
    (isa, avx512 && is_x86_feature_detected!("avx512bf16"))
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> (Option<Isa>, bool) {
    (None, false)
}

/// The f32 instruction set in use and whether the bf16 kernel is: what the
/// CPU offers, narrowed by `ALTCLIP_KERNELS=candle` (none) or `=avx2` (AVX2
/// only, no bf16), read once per process.
pub fn chosen() -> (Option<Isa>, bool) {
    static CHOICE: OnceLock<(Option<Isa>, bool)> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let (isa, bf16) = detected();
        match std::env::var("ALTCLIP_KERNELS").as_deref() {
            Ok("candle") => (None, false),
            Ok("avx2") => (isa.map(|_| Isa::Avx2), false),
            _ => (isa, bf16),
        }
    })
}
