//! The micro-kernels, one per [`Kernel`]: each multiplies a few rows of
//! packed A by one 32-column panel of packed B, accumulating in registers.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::amx;
use super::cpu::Kernel;
#[cfg(target_arch = "x86_64")]
use super::gemm::NR;

/// Rows per AVX-512 micro-tile: 24 accumulators + 2 `W` vectors + 1
/// broadcast fit the 32 zmm registers.
const MR: usize = 12;
/// Rows per AVX2 micro-tile: 12 ymm accumulators (two 16-column halves of a
/// panel, one after the other) + 2 `W` + 1 broadcast of 16.
const MR_AVX2: usize = 6;

/// Dispatches the row count to a const-generic micro-kernel (`$max` for
/// every count not listed).
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($mr:expr, $f:ident, [$($r:literal)*], $max:literal, $args:tt) => {
        match $mr {
            $($r => $f::<$r> $args,)*
            _ => $f::<$max> $args,
        }
    };
}

/// Output rows per micro-tile of `kernel`.
pub fn rows_per_tile(kernel: Kernel) -> usize {
    match kernel {
        Kernel::Avx2 => MR_AVX2,
        Kernel::Avx512 | Kernel::Avx512Bf16 | Kernel::Avx512Vnni => MR,
        Kernel::AmxBf16 | Kernel::AmxInt8 => crate::amx::MR,
    }
}

/// One micro-tile: `mr ≤ rows_per_tile` rows of packed A (f32 bits, bf16
/// pairs or int8 quads) times one panel slice of B into C, with `kernel`.
/// The int8 kernel keeps its i32 sums in C's bits until the GEMM
/// dequantises the finished rows.
///
/// # Safety
/// `kernel` runs on this CPU; `a`, `b` and `c` hold the rows, `kc` packed
/// K elements and 32 columns the call reads and writes.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    kernel: Kernel,
    mr: usize,
    kc: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    let (af, bf) = (a.cast::<f32>(), b.cast::<f32>());
    match kernel {
        Kernel::Avx512Bf16 => by_rows!(
            mr,
            micro_bf16,
            [1 2 3 4 5 6 7 8 9 10 11],
            12,
            (kc, a, lda, b, c, ldc, first)
        ),
        Kernel::Avx512Vnni => by_rows!(
            mr,
            micro_int8,
            [1 2 3 4 5 6 7 8 9 10 11],
            12,
            (kc, a, lda, b, c.cast::<i32>(), ldc, first)
        ),
        Kernel::Avx512 => by_rows!(
            mr,
            micro_f32,
            [1 2 3 4 5 6 7 8 9 10 11],
            12,
            (kc, af, lda, bf, c, ldc, first)
        ),
        Kernel::Avx2 => by_rows!(
            mr,
            micro_f32_avx2,
            [1 2 3 4 5],
            6,
            (kc, af, lda, bf, c, ldc, first)
        ),
        // Always 32 rows: the GEMM pads A and the C block to whole tiles.
        Kernel::AmxBf16 => amx::tile(amx::Op::Bf16, kc, a, lda, b, c, ldc, first),
        Kernel::AmxInt8 => amx::tile(amx::Op::Int8, kc, a, lda, b, c, ldc, first),
    }
}

// Never called: no kernel runs off x86-64, so nothing is packed there.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    _: Kernel,
    _: usize,
    _: usize,
    _: *const u32,
    _: usize,
    _: *const u32,
    _: *mut f32,
    _: usize,
    _: bool,
) {
    unreachable!("x86-64 kernels on another CPU")
}

/// The 32-column panel as two 16-column halves, `R` rows each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_f32_avx2<const R: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    for half in [0, 16] {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        if !first {
            for i in 0..R {
                lo[i] = _mm256_loadu_ps(c.add(i * ldc + half));
                hi[i] = _mm256_loadu_ps(c.add(i * ldc + half + 8));
            }
        }
        for r in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(r * NR + half));
            let b1 = _mm256_loadu_ps(b.add(r * NR + half + 8));
            for i in 0..R {
                let x = _mm256_set1_ps(*a.add(i * lda + r));
                lo[i] = _mm256_fmadd_ps(x, b0, lo[i]);
                hi[i] = _mm256_fmadd_ps(x, b1, hi[i]);
            }
        }
        for i in 0..R {
            _mm256_storeu_ps(c.add(i * ldc + half), lo[i]);
            _mm256_storeu_ps(c.add(i * ldc + half + 8), hi[i]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_f32<const R: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    let (mut lo, mut hi) = load_acc::<R>(c, ldc, first);
    for r in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(r * NR));
        let b1 = _mm512_loadu_ps(b.add(r * NR + 16));
        for i in 0..R {
            let x = _mm512_set1_ps(*a.add(i * lda + r));
            lo[i] = _mm512_fmadd_ps(x, b0, lo[i]);
            hi[i] = _mm512_fmadd_ps(x, b1, hi[i]);
        }
    }
    store_acc::<R>(c, ldc, &lo, &hi);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro_bf16<const R: usize>(
    kc: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    let (mut lo, mut hi) = load_acc::<R>(c, ldc, first);
    for r in 0..kc {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(r * NR).cast()));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(r * NR + 16).cast()));
        for i in 0..R {
            let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i * lda + r) as i32));
            lo[i] = _mm512_dpbf16_ps(lo[i], x, b0);
            hi[i] = _mm512_dpbf16_ps(hi[i], x, b1);
        }
    }
    store_acc::<R>(c, ldc, &lo, &hi);
}

/// Unsigned bytes of A times signed bytes of B, four per lane, into i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn micro_int8<const R: usize>(
    kc: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut i32,
    ldc: usize,
    first: bool,
) {
    let mut lo = [_mm512_setzero_si512(); R];
    let mut hi = [_mm512_setzero_si512(); R];
    if !first {
        for i in 0..R {
            lo[i] = _mm512_loadu_si512(c.add(i * ldc).cast());
            hi[i] = _mm512_loadu_si512(c.add(i * ldc + 16).cast());
        }
    }
    for r in 0..kc {
        let b0 = _mm512_loadu_si512(b.add(r * NR).cast());
        let b1 = _mm512_loadu_si512(b.add(r * NR + 16).cast());
        for i in 0..R {
            let x = _mm512_set1_epi32(*a.add(i * lda + r) as i32);
            lo[i] = _mm512_dpbusd_epi32(lo[i], x, b0);
            hi[i] = _mm512_dpbusd_epi32(hi[i], x, b1);
        }
    }
    for i in 0..R {
        _mm512_storeu_si512(c.add(i * ldc).cast(), lo[i]);
        _mm512_storeu_si512(c.add(i * ldc + 16).cast(), hi[i]);
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_acc<const R: usize>(
    c: *const f32,
    ldc: usize,
    first: bool,
) -> ([__m512; R], [__m512; R]) {
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    if !first {
        for i in 0..R {
            lo[i] = _mm512_loadu_ps(c.add(i * ldc));
            hi[i] = _mm512_loadu_ps(c.add(i * ldc + 16));
        }
    }
    (lo, hi)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_acc<const R: usize>(c: *mut f32, ldc: usize, lo: &[__m512; R], hi: &[__m512; R]) {
    for i in 0..R {
        _mm512_storeu_ps(c.add(i * ldc), lo[i]);
        _mm512_storeu_ps(c.add(i * ldc + 16), hi[i]);
    }
}
