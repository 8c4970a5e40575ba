//! Intel AMX: detection, the Linux permission request, the per-thread tile
//! configuration, and the micro-kernel (bf16 `tdpbf16ps`, int8 `tdpbusd`).
//!
//! `is_x86_feature_detected!("amx-bf16")` and the `_tile_*` intrinsics are
//! unstable, so detection reads CPUID and XCR0 and the instructions are
//! written with `asm!` (see `shared/docs/amx-notes.md`).
//!
//! The micro-tile is 32 rows × 32 columns: four 16×16 f32 (or i32) C tiles
//! in tmm0–3, two A tiles (rows 0–15 and 16–31) in tmm4–5, and two B tiles
//! (columns 0–15 and 16–31) in tmm6–7, so each loaded tile is used twice.
//! One configuration serves every tile: 16 rows of 64 bytes.
//!
//! The packed layouts already are AMX's: a bf16 B panel row holds, per
//! column, the pair (k, k+1) in one u32, which is AMX's pair-interleaved B;
//! an int8 row holds the quad (k..k+4), its quad-interleaved B. A B tile is
//! 16 panel rows (128 bytes apart) and half of each; an A tile is 16 rows of
//! packed A at one K offset. Both K and the rows of A are padded (with zero
//! weights) to whole tiles, so no tile reads past its operand.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;

/// Rows of one AMX micro-tile (two A tiles).
pub const MR: usize = 32;

/// Packed K rows (bf16 pairs or int8 quads) per tile step: a tile's 16 rows.
pub const K_STEP: usize = 16;

/// What this CPU reports and the OS allows, for [`crate::Kernel::runs_here`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AmxSupport {
    /// CPUID.(7,0):EDX bit 24.
    pub tile: bool,
    /// CPUID.(7,0):EDX bit 22.
    pub bf16: bool,
    /// CPUID.(7,0):EDX bit 25.
    pub int8: bool,
    /// Linux granted the tile data state (`arch_prctl`) and XCR0 enables it.
    pub permitted: bool,
}

/// Detects AMX and, when the CPU has it, asks Linux for the tile state
/// (without which the first tile instruction is SIGILL).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn detect() -> AmxSupport {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: CPUID is available on every x86-64 CPU.
    let max_leaf = __cpuid(0).eax;
    if max_leaf < 7 {
        return AmxSupport::default();
    }
    // SAFETY: leaf 7 exists (checked above).
    let edx = __cpuid_count(7, 0).edx;
    let mut found = AmxSupport {
        tile: edx & (1 << 24) != 0,
        bf16: edx & (1 << 22) != 0,
        int8: edx & (1 << 25) != 0,
        permitted: false,
    };
    if found.tile {
        found.permitted = request_permission() && xcr0_enables_tiles();
    }
    found
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn detect() -> AmxSupport {
    AmxSupport::default()
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: once per process,
/// for every thread.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: the request only changes which register state the kernel saves.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA), when the OS uses XSAVE.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn xcr0_enables_tiles() -> bool {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID leaf 1 always exists; ECX bit 27 is OSXSAVE.
    if __cpuid(1).ecx & (1 << 27) == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 is valid once OSXSAVE is set.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack));
    }
    lo & (0b11 << 17) == 0b11 << 17
}

/// The one tile configuration: palette 1, every tile 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        // colsb (u16, little-endian) at 16 + 2t, rows at 48 + t.
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

thread_local! {
    /// Whether this thread has loaded [`CONFIG`]; a configuration lasts
    /// until `tilerelease`, which nothing here issues.
    static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(target_arch = "x86_64")]
unsafe fn configure_this_thread() {
    if !CONFIGURED.get() {
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
        CONFIGURED.set(true);
    }
}

/// The product a micro-tile computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// bf16 pairs, f32 sums (`tdpbf16ps`).
    Bf16,
    /// u8 A × i8 B quads, i32 sums (`tdpbusd`).
    Int8,
}

/// One 32×32 micro-tile: C (`ldc` apart, f32 or i32 bits) = (or +=, unless
/// `first`) 32 rows of packed A (`lda` words apart) × one panel of B over
/// `kc` packed K rows.
///
/// # Safety
/// AMX runs here and is permitted; `kc` is a multiple of [`K_STEP`]; `a`
/// holds 32 rows of at least `kc` words, `b` `kc` panel rows of 32 words,
/// and `c` 32 rows of 32 floats.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    op: Op,
    kc: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    debug_assert_eq!(kc % K_STEP, 0);
    #[cfg(test)]
    if emulating() {
        return emulate(op, kc, a, lda, b, c, ldc, first);
    }
    configure_this_thread();
    let (sa, sb, sc) = (lda * 4, crate::gemm::NR * 4, ldc * 4);
    let (c0, c1, c2, c3) = (c, c.add(16), c.add(16 * ldc), c.add(16 * ldc + 16));
    if first {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nomem, nostack)
        );
    } else {
        asm!(
            "tileloadd tmm0, [{c0} + {sc} * 1]",
            "tileloadd tmm1, [{c1} + {sc} * 1]",
            "tileloadd tmm2, [{c2} + {sc} * 1]",
            "tileloadd tmm3, [{c3} + {sc} * 1]",
            c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
            sc = in(reg) sc,
            options(nostack, readonly)
        );
    }
    for s in (0..kc).step_by(K_STEP) {
        let (a0, a1) = (a.add(s), a.add(16 * lda + s));
        let (b0, b1) = (b.add(s * crate::gemm::NR), b.add(s * crate::gemm::NR + 16));
        // One K step: A rows 0–15 meet both B halves, then rows 16–31 do.
        macro_rules! step {
            ($dp:literal) => {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa} * 1]",
                    "tileloadd tmm6, [{b0} + {sb} * 1]",
                    "tileloadd tmm7, [{b1} + {sb} * 1]",
                    concat!($dp, " tmm0, tmm4, tmm6"),
                    concat!($dp, " tmm1, tmm4, tmm7"),
                    "tileloadd tmm5, [{a1} + {sa} * 1]",
                    concat!($dp, " tmm2, tmm5, tmm6"),
                    concat!($dp, " tmm3, tmm5, tmm7"),
                    a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                    sa = in(reg) sa, sb = in(reg) sb,
                    options(nostack, readonly)
                )
            };
        }
        match op {
            Op::Bf16 => step!("tdpbf16ps"),
            Op::Int8 => step!("tdpbusd"),
        }
    }
    asm!(
        "tilestored [{c0} + {sc} * 1], tmm0",
        "tilestored [{c1} + {sc} * 1], tmm1",
        "tilestored [{c2} + {sc} * 1], tmm2",
        "tilestored [{c3} + {sc} * 1], tmm3",
        c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
        sc = in(reg) sc,
        options(nostack)
    );
}

#[cfg(test)]
thread_local! {
    /// Set by tests: [`tile`] runs [`emulate`] on this thread instead.
    static EMULATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether [`tile`] is emulated on this thread (tests on CPUs without AMX).
pub(crate) fn emulating() -> bool {
    #[cfg(test)]
    return EMULATE.get();
    #[cfg(not(test))]
    false
}

/// Runs `f` with [`tile`] emulated on this thread.
#[cfg(test)]
pub(crate) fn with_emulation<T>(f: impl FnOnce() -> T) -> T {
    EMULATE.set(true);
    let out = f();
    EMULATE.set(false);
    out
}

/// What [`tile`]'s instructions do, in scalar code over the same memory:
/// `tileloadd` of 16 rows × 64 bytes at a byte stride, `tdpbf16ps` and
/// `tdpbusd` per Intel's pseudocode, `tilestored`. It checks the addressing
/// and layouts on any CPU; only the instruction encoding is left to AMX.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
unsafe fn emulate(
    op: Op,
    kc: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    type Tile = [[u32; 16]; 16];
    let load = |base: *const u32, stride_words: usize| -> Tile {
        let mut t = [[0u32; 16]; 16];
        for (r, row) in t.iter_mut().enumerate() {
            for (w, v) in row.iter_mut().enumerate() {
                *v = *base.add(r * stride_words + w);
            }
        }
        t
    };
    let nr = crate::gemm::NR;
    let corner = |ti: usize, tj: usize| c.add(16 * ti * ldc + 16 * tj);
    let mut acc = [[[0u32; 16]; 16]; 4];
    if !first {
        for (t, tile) in acc.iter_mut().enumerate() {
            *tile = load(corner(t / 2, t % 2).cast(), ldc);
        }
    }
    let bf16 = |bits: u32| f32::from_bits(bits << 16);
    for s in (0..kc).step_by(K_STEP) {
        let at = [load(a.add(s), lda), load(a.add(16 * lda + s), lda)];
        let bt = [load(b.add(s * nr), nr), load(b.add(s * nr + 16), nr)];
        for (t, tile) in acc.iter_mut().enumerate() {
            let (ta, tb) = (&at[t / 2], &bt[t % 2]);
            for m in 0..16 {
                for n in 0..16 {
                    let (mut f, mut i) = (f32::from_bits(tile[m][n]), tile[m][n] as i32);
                    for (&aw, brow) in ta[m].iter().zip(tb) {
                        let bw = brow[n];
                        match op {
                            Op::Bf16 => {
                                f += bf16(aw & 0xffff) * bf16(bw & 0xffff)
                                    + bf16(aw >> 16) * bf16(bw >> 16)
                            }
                            Op::Int8 => {
                                for q in 0..4 {
                                    let x = (aw >> (8 * q)) as u8 as i32;
                                    let y = (bw >> (8 * q)) as u8 as i8 as i32;
                                    i = i.wrapping_add(x * y);
                                }
                            }
                        }
                    }
                    tile[m][n] = match op {
                        Op::Bf16 => f.to_bits(),
                        Op::Int8 => i as u32,
                    };
                }
            }
        }
    }
    for (t, tile) in acc.iter().enumerate() {
        let base = corner(t / 2, t % 2).cast::<u32>();
        for (r, row) in tile.iter().enumerate() {
            for (w, v) in row.iter().enumerate() {
                *base.add(r * ldc + w) = *v;
            }
        }
    }
}

/// Runs `check` in a forked child first, so that a kernel that faults
/// (a tile instruction this CPU or kernel refuses) fails its first-use
/// check instead of killing the process; then runs it here.
#[cfg(target_os = "linux")]
pub fn isolated(check: &mut dyn FnMut() -> Result<(), String>) -> Result<(), String> {
    // SAFETY: the child only runs the check (small, single-threaded: no
    // rayon, and glibc's malloc is fork-safe) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!(
            "cannot fork to try it: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *check)) {
            Ok(Ok(())) => 0,
            _ => 1,
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err("lost the child process that tried it".into());
    }
    if libc::WIFSIGNALED(status) {
        return Err(format!(
            "it died with signal {} in a child process",
            libc::WTERMSIG(status)
        ));
    }
    if libc::WEXITSTATUS(status) != 0 {
        return Err("it computed a wrong result in a child process".into());
    }
    check()
}

#[cfg(not(target_os = "linux"))]
pub fn isolated(check: &mut dyn FnMut() -> Result<(), String>) -> Result<(), String> {
    check()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_palette_1_with_16_rows_of_64_bytes() {
        let c = &CONFIG.0;
        assert_eq!(c[0], 1);
        for t in 0..8 {
            assert_eq!(u16::from_le_bytes([c[16 + 2 * t], c[17 + 2 * t]]), 64);
            assert_eq!(c[48 + t], 16);
        }
        assert_eq!(std::mem::align_of::<TileConfig>(), 64);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_check_that_crashes_in_the_child_is_a_failure_not_a_crash() {
        let mut crash = || -> Result<(), String> {
            // SAFETY: deliberately ends the (child) process by a signal.
            unsafe { libc::raise(libc::SIGILL) };
            Ok(())
        };
        let err = isolated(&mut crash).unwrap_err();
        assert!(err.contains("signal 4"), "{err}");
        let mut wrong = || Err::<(), String>("off".into());
        assert!(isolated(&mut wrong).unwrap_err().contains("wrong result"));
        let mut fine = || Ok(());
        assert_eq!(isolated(&mut fine), Ok(()));
    }
}
