//! Blocked GEMM, `C[M, N] = A[M, K] · W[N, K]ᵀ`, with `W` packed once at
//! load time for one [`Kernel`] and `A` packed per call (which also rounds
//! it to bf16 for the bf16 kernel). Accumulation is always f32; the
//! micro-kernels themselves are in [`super::micro`].
//!
//! Blocking: threads split the output columns into groups of 32-column panels;
//! within a group, for each K block, a 12-row slice of `A` is packed into a
//! small k-major buffer (L1) and multiplied by every panel of the group (the
//! group's `W` block stays in L2). Packing `A` avoids the 4 KiB-stride cache
//! set conflicts that reading 12 rows of a row-major matrix would cause.

use rayon::prelude::*;

use super::cpu::{Kernel, Precision};
use super::micro;

/// Output columns per panel: two zmm registers.
pub const NR: usize = 32;
/// K elements per block (f32 kernel; the bf16 kernel takes `KC` pairs).
const KC: usize = 256;
/// Rows per block whose output tiles stay in L2 (a multiple of every
/// kernel's tile height).
const MC: usize = 96;
/// Panels per thread task at most: 256 columns, a 256 KiB `W` block in f32.
const MAX_GROUP: usize = 8;

/// Elements below which packing runs on one thread into a plain vector
/// (per-head keys and values in attention).
const SMALL: usize = 1 << 18;

/// A `[N, K]` weight laid out panel by panel: panel `p` holds columns
/// `32p..32p+32` for every k (f32), or for every pair of k as two bf16 in one
/// u32 (bf16), zero-padded to whole panels and whole pairs.
pub struct PackedB {
    pub kernel: Kernel,
    pub n: usize,
    pub k: usize,
    data: Storage,
    /// Per column, for int8: the dequantisation scale and the sum of the
    /// quantised column (which the u8 offset of A is corrected by).
    quant: Option<ColumnQuant>,
}

/// Per-column quantisation of an int8 weight.
struct ColumnQuant {
    scales: Vec<f32>,
    sums: Vec<i32>,
}

/// The symmetric int8 scale of values whose largest magnitude is `max_abs`.
#[inline]
pub fn int8_scale(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / 127.0
    } else {
        1.0
    }
}

/// `x` rounded to the nearest integer, ties to even, for |x| < 2²²: adding
/// and subtracting 1.5·2²³ rounds in the FPU, where `f32::round` would call
/// libm once per element of a model's weights.
#[inline(always)]
fn round_small(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    // Out-of-range values (NaN, huge) are clamped by the callers' range.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-4_194_304.0).min(4_194_304.0);
    ((x + MAGIC) - MAGIC) as i32
}

/// `x / scale` rounded to the nearest integer in [-127, 127].
#[inline(always)]
pub fn quantize(x: f32, inv_scale: f32) -> i32 {
    round_small(x * inv_scale).clamp(-127, 127)
}

/// The asymmetric u8 quantisation of a row of activations (`vpdpbusd`
/// multiplies unsigned bytes of A by signed bytes of B): `x ≈ scale · (q − zero)`
/// with `q` in 0..=255, so that a one-sided row (after GELU) uses every level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowQuant {
    pub scale: f32,
    pub zero: i32,
}

impl RowQuant {
    /// The quantisation of `row`: its range, widened to hold 0 exactly.
    #[inline(always)]
    pub fn of(row: &[f32]) -> Self {
        // Sixteen running extremes (one per vector lane), reduced at the end:
        // a single running min/max is a chain the compiler cannot vectorise.
        const LANES: usize = 16;
        let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
        let chunks = row.chunks_exact(LANES);
        for x in chunks.remainder() {
            lo[0] = lo[0].min(*x);
            hi[0] = hi[0].max(*x);
        }
        for chunk in chunks {
            for t in 0..LANES {
                lo[t] = lo[t].min(chunk[t]);
                hi[t] = hi[t].max(chunk[t]);
            }
        }
        let lo = lo.iter().fold(0f32, |m, &x| m.min(x));
        let hi = hi.iter().fold(0f32, |m, &x| m.max(x));
        let range = hi - lo;
        if !(range > 0.0 && range.is_finite()) {
            return Self {
                scale: 1.0,
                zero: 0,
            };
        }
        let scale = range / 255.0;
        Self {
            scale,
            zero: round_small(-lo / scale).clamp(0, 255),
        }
    }

    /// The byte of `x`.
    #[inline(always)]
    pub fn byte(self, x: f32, inv_scale: f32) -> u32 {
        (round_small(x * inv_scale) + self.zero).clamp(0, 255) as u32
    }
}

/// Page-aligned memory for a packed weight: an anonymous map asking for huge
/// pages (a model is gigabytes: 2 MiB pages fault 512 times less while
/// packing and relieve the TLB in the GEMM), or a plain vector if mapping fails.
enum Storage {
    Map(memmap2::MmapMut),
    Vec(Vec<u32>),
}

impl Storage {
    fn zeroed(len: usize) -> Self {
        if len < SMALL {
            return Storage::Vec(vec![0; len]);
        }
        match memmap2::MmapMut::map_anon(len * 4) {
            Ok(map) => {
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                Storage::Map(map)
            }
            Err(_) => Storage::Vec(vec![0; len]),
        }
    }

    fn as_slice(&self, len: usize) -> &[u32] {
        match self {
            // SAFETY: the map is page-aligned, at least `len` u32 long, and
            // anonymous maps start zeroed.
            Storage::Map(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().cast(), len) },
            Storage::Vec(v) => &v[..len],
        }
    }

    fn as_mut_slice(&mut self, len: usize) -> &mut [u32] {
        match self {
            // SAFETY: as in `as_slice`, and borrowed mutably.
            Storage::Map(m) => unsafe {
                std::slice::from_raw_parts_mut(m.as_mut_ptr().cast(), len)
            },
            Storage::Vec(v) => &mut v[..len],
        }
    }
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedB({:?}, n={}, k={})", self.kernel, self.n, self.k)
    }
}

/// Rounds to the nearest bf16, ties to even, as PyTorch does.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16;
    if x.is_nan() {
        0x7fc0
    } else {
        rounded
    }
}

#[inline(always)]
pub fn bf16_to_f32(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

impl PackedB {
    /// Packs a row-major `[n, k]` weight.
    pub fn pack(w: &[f32], n: usize, k: usize, kernel: Kernel) -> Self {
        assert_eq!(w.len(), n * k, "weight length");
        Self::pack_strided(w, n, k, (k, 1), kernel)
    }

    /// Packs `[n, k]` whose element `(j, kk)` is `w[j·stride.0 + kk·stride.1]`:
    /// a weight, a slice of keys, or values read transposed.
    pub fn pack_strided(
        w: &[f32],
        n: usize,
        k: usize,
        stride: (usize, usize),
        kernel: Kernel,
    ) -> Self {
        let precision = kernel.precision();
        let (sn, sk) = stride;
        assert!(
            n == 0 || k == 0 || w.len() > (n - 1) * sn + (k - 1) * sk,
            "strided weight length"
        );
        let panels = n.div_ceil(NR);
        let rows = Self::rows_for(k, kernel);
        let len = panels * rows * NR;
        let mut data = Storage::zeroed(len);
        // Fills panel `p` column by column: each column (a row of the
        // weight) is quantised or rounded as one contiguous slice, which
        // vectorises, then spread over the panel's rows. Returns, per
        // column, the int8 scale and the sum of the quantised values.
        let fill = |(p, panel): (usize, &mut [u32])| -> [(f32, i32); NR] {
            let mut quant = [(1.0, 0); NR];
            let mut words = vec![0u32; rows];
            let mut gathered = Vec::new();
            for j in p * NR..n.min((p + 1) * NR) {
                let col: &[f32] = if sk == 1 {
                    &w[j * sn..][..k]
                } else {
                    gathered.clear();
                    gathered.extend((0..k).map(|kk| w[j * sn + kk * sk]));
                    &gathered
                };
                quant[j % NR] = pack_column(col, kernel, &mut words);
                for (r, &word) in words.iter().enumerate() {
                    panel[r * NR + j % NR] = word;
                }
            }
            quant
        };
        let out = data.as_mut_slice(len);
        let panel_quant: Vec<[(f32, i32); NR]> = if len >= SMALL {
            out.par_chunks_mut(rows * NR)
                .enumerate()
                .map(fill)
                .collect()
        } else {
            out.chunks_mut(rows * NR).enumerate().map(fill).collect()
        };
        let quant = (precision == Precision::Int8).then(|| {
            let (mut scales, mut sums): (Vec<f32>, Vec<i32>) =
                panel_quant.into_iter().flatten().unzip();
            scales.truncate(n);
            sums.truncate(n);
            ColumnQuant { scales, sums }
        });
        Self {
            kernel,
            n,
            k,
            data,
            quant,
        }
    }

    /// Packed rows per panel: k (f32), k pairs (bf16) or k quads (int8);
    /// for AMX, whole tiles of 16 (the padding is zero weights).
    fn rows_for(k: usize, kernel: Kernel) -> usize {
        let rows = packed_words(k, kernel.precision());
        if kernel.amx() {
            rows.next_multiple_of(crate::amx::K_STEP)
        } else {
            rows
        }
    }

    fn rows(&self) -> usize {
        Self::rows_for(self.k, self.kernel)
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn len(&self) -> usize {
        self.panels() * self.rows() * NR
    }

    fn panel(&self, p: usize) -> &[u32] {
        let rows = self.rows();
        &self.data.as_slice(self.len())[p * rows * NR..][..rows * NR]
    }

    /// The weight back as row-major `[n, k]` f32 (bf16 values widened, int8
    /// values dequantised).
    pub fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for (i, v) in w.iter_mut().enumerate() {
            let (j, kk) = (i / self.k, i % self.k);
            let panel = self.panel(j / NR);
            *v = match self.kernel.precision() {
                Precision::F32 => f32::from_bits(panel[kk * NR + j % NR]),
                Precision::Bf16 => {
                    let pair = panel[(kk / 2) * NR + j % NR];
                    bf16_to_f32(if kk % 2 == 0 {
                        pair & 0xffff
                    } else {
                        pair >> 16
                    })
                }
                Precision::Int8 => {
                    let quad = panel[(kk / 4) * NR + j % NR];
                    let q = (quad >> (8 * (kk % 4))) as u8 as i8;
                    let scale = self.quant.as_ref().map_or(1.0, |q| q.scales[j]);
                    q as f32 * scale
                }
            };
        }
        w
    }
}

/// Packs one column of a weight (its `k` values, contiguous) into `words`
/// (one per packed row, the padding zeroed) for `kernel`'s precision; for
/// int8 returns the column's scale and the sum of its quantised values.
fn pack_column(col: &[f32], kernel: Kernel, words: &mut [u32]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: weights are packed only for kernels that run here.
    unsafe {
        if kernel.avx512() {
            pack_column_avx512(col, kernel.precision(), words)
        } else {
            pack_column_avx2(col, kernel.precision(), words)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    pack_column_any(col, kernel.precision(), words)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn pack_column_avx512(col: &[f32], precision: Precision, words: &mut [u32]) -> (f32, i32) {
    pack_column_any(col, precision, words)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pack_column_avx2(col: &[f32], precision: Precision, words: &mut [u32]) -> (f32, i32) {
    pack_column_any(col, precision, words)
}

/// Compiled once per instruction set through the wrappers above.
#[inline(always)]
fn pack_column_any(col: &[f32], precision: Precision, words: &mut [u32]) -> (f32, i32) {
    let used = packed_words(col.len(), precision);
    words[used..].fill(0);
    match precision {
        Precision::F32 | Precision::Bf16 => {
            pack_floats(col, precision, words);
            (1.0, 0)
        }
        Precision::Int8 => {
            let scale = int8_scale(max_abs(col));
            let inv = 1.0 / scale;
            let mut sum = 0i32;
            let quads = col.chunks_exact(4);
            let tail = quads.remainder();
            for (o, q) in words.iter_mut().zip(quads) {
                // Spelled out: array::map would not inline into the wrapper.
                let (a, b, c, d) = (
                    quantize(q[0], inv),
                    quantize(q[1], inv),
                    quantize(q[2], inv),
                    quantize(q[3], inv),
                );
                sum += a + b + c + d;
                *o = (a as u8 as u32)
                    | (b as u8 as u32) << 8
                    | (c as u8 as u32) << 16
                    | (d as u8 as u32) << 24;
            }
            if !tail.is_empty() {
                let v: Vec<i32> = tail.iter().map(|&x| quantize(x, inv)).collect();
                sum += v.iter().sum::<i32>();
                words[used - 1] = v
                    .iter()
                    .enumerate()
                    .fold(0, |word, (t, &q)| word | ((q as u8 as u32) << (8 * t)));
            }
            (scale, sum)
        }
    }
}

/// `v` as f32 bits, or as bf16 pairs (the last one zero-padded when its
/// length is odd), into the first words of `out`: the float packing that
/// weights (per column) and activations (per row) share.
#[inline(always)]
fn pack_floats(v: &[f32], precision: Precision, out: &mut [u32]) {
    if precision == Precision::F32 {
        for (o, x) in out.iter_mut().zip(v) {
            *o = x.to_bits();
        }
        return;
    }
    let pairs = v.chunks_exact(2);
    let last = pairs.remainder().first().map(|&x| bf16_bits(x));
    let n = pairs.len();
    for (o, pair) in out.iter_mut().zip(pairs) {
        *o = bf16_bits(pair[0]) | (bf16_bits(pair[1]) << 16);
    }
    if let Some(lo) = last {
        out[n] = lo;
    }
}

/// The largest |x| of `v`, with sixteen running maxima (one per vector
/// lane): a single running maximum is a chain the compiler cannot vectorise.
#[inline(always)]
fn max_abs(v: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    for x in chunks.remainder() {
        lanes[0] = lanes[0].max(x.abs());
    }
    for chunk in chunks {
        for t in 0..LANES {
            lanes[t] = lanes[t].max(chunk[t].abs());
        }
    }
    lanes.iter().fold(0f32, |m, &x| m.max(x))
}

/// Words that `k` values take packed: k (f32), k pairs (bf16), k quads (int8).
fn packed_words(k: usize, precision: Precision) -> usize {
    match precision {
        Precision::F32 => k,
        Precision::Bf16 => k.div_ceil(2),
        Precision::Int8 => k.div_ceil(4),
    }
}

/// Whether a GEMM may split across rayon's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Split when it is big enough to pay off.
    Auto,
    /// Stay on the calling thread (the caller is already parallel).
    One,
}

/// What happens to each finished tile: `act(acc + bias) + residual`.
pub trait Epilogue: Sync {
    /// `tile` holds columns `col..col+tile.len()` of output row `row`.
    fn apply(&self, row: usize, col: usize, tile: &mut [f32]);
}

/// An output as a raw pointer shared by threads that write disjoint parts.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub *mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the `Send` wrapper).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// `c[m, ..n] = a[m, k] · bᵀ` (rows `ldc` apart) with `b`'s kernel, then
/// `epi` on every output row segment. `c` may be uninitialised: it is only
/// written, once per element.
///
/// # Safety
/// `c` must be valid for writes of `m` rows of `ldc ≥ n` floats, and `b`'s
/// kernel must run on this CPU (checked where weights are packed).
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    a: &[f32],
    lda_in: usize,
    m: usize,
    b: &PackedB,
    c: *mut f32,
    ldc: usize,
    epi: &dyn Epilogue,
    threads: Threads,
) {
    let k = b.k;
    assert!(m == 0 || (lda_in >= k && a.len() >= (m - 1) * lda_in + k));
    assert!(ldc >= b.n);
    debug_assert!(b.kernel.runs_here() || crate::amx::emulating());
    let parallel =
        threads == Threads::Auto && m * b.n * k >= 1 << 20 && rayon::current_num_threads() > 1;

    // A once more, row-major with a padded row stride: as bf16 pairs for the
    // bf16 kernel, and for both so that the 12 rows a micro-kernel reads do
    // not fall into the same L1 sets (as 4 KiB-multiple strides would).
    let lda = b.rows().next_multiple_of(16) + 16;
    // Grown, never cleared: every element a kernel uses is packed below. An
    // AMX tile reads whole tiles of rows; the rows past `m` only make
    // outputs that are never stored.
    let padded_m = m.next_multiple_of(micro::rows_per_tile(b.kernel));
    let mut packed_a = SCRATCH.take();
    if packed_a.len() < padded_m * lda {
        packed_a.resize(padded_m * lda, 0);
    }
    let padded_k = b.rows();
    let precision = b.kernel.precision();
    // Per row, the int8 quantisation of A (unused by the float kernels).
    let mut row_quant = vec![
        RowQuant {
            scale: 1.0,
            zero: 0
        };
        m
    ];
    let pack = |(i, (out, quant)): (usize, (&mut [u32], &mut RowQuant))| {
        *quant = pack_a_row(&a[i * lda_in..][..k], b.kernel, out);
        // K padding meets zero weights, but stale bits could be NaN.
        out[packed_words(k, precision)..padded_k].fill(0);
    };
    if parallel {
        packed_a[..m * lda]
            .par_chunks_mut(lda)
            .zip(row_quant.par_iter_mut())
            .enumerate()
            .for_each(pack);
    } else {
        packed_a[..m * lda]
            .chunks_mut(lda)
            .zip(row_quant.iter_mut())
            .enumerate()
            .for_each(pack);
    }

    let panels = b.panels();
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let groups_wanted = threads * panels.div_ceil(threads * MAX_GROUP);
    let group = panels.div_ceil(groups_wanted);
    let out = OutPtr(c);
    let a_ref = PackedA {
        data: &packed_a[..],
        lda,
        m,
        row_quant: &row_quant,
    };
    let run = |g: usize| {
        let panels = g * group..((g + 1) * group).min(panels);
        // SAFETY: the kernel runs here (the caller's contract); each group
        // writes only its columns.
        unsafe { run_group(&a_ref, b, out.get(), ldc, panels, epi) }
    };
    let ngroups = panels.div_ceil(group);
    if parallel {
        (0..ngroups).into_par_iter().for_each(run);
    } else {
        (0..ngroups).for_each(run);
    }
    SCRATCH.set(packed_a);
}

thread_local! {
    /// The packed copy of A, reused between calls (taken, so a nested call
    /// on the same thread simply allocates its own).
    static SCRATCH: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    /// A worker's block of output tiles, reused likewise.
    static C_BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A packed for one call: `m` rows `lda` words apart, with their int8
/// quantisation.
struct PackedA<'a> {
    data: &'a [u32],
    lda: usize,
    m: usize,
    row_quant: &'a [RowQuant],
}

/// One thread's share: every row, the columns of `panels`.
unsafe fn run_group(
    pa: &PackedA,
    b: &PackedB,
    c: *mut f32,
    ldc: usize,
    panels: std::ops::Range<usize>,
    epi: &dyn Epilogue,
) {
    let (a, lda, m) = (pa.data, pa.lda, pa.m);
    let rows = b.rows();
    let kernel = b.kernel;
    let rows_per_tile = micro::rows_per_tile(kernel);
    let col0 = panels.start * NR;
    let cols = b.n.min(panels.end * NR) - col0;
    // The micro-kernels accumulate into a per-thread block whose row stride
    // is off the 4 KiB multiples that output strides such as 4096 floats are
    // (12 rows in one L1 set); finished rows are copied out.
    let lds = panels.len() * NR + 16;
    let mut block = C_BLOCK.take();
    if block.len() < MC * lds {
        block.resize(MC * lds, 0.0);
    }
    let blk = block.as_mut_ptr();
    // Rows in blocks of `MC` so that their tiles stay in L2 across the K
    // blocks; within a block, each `W` panel slice is reused by every row
    // chunk and each slice of `A` by every panel.
    for m0 in (0..m).step_by(MC) {
        let m1 = (m0 + MC).min(m);
        let mut r0 = 0;
        while r0 < rows {
            let kc = KC.min(rows - r0);
            for p in panels.clone() {
                let bp = b.panel(p)[r0 * NR..].as_ptr();
                for i0 in (m0..m1).step_by(rows_per_tile) {
                    let mr = rows_per_tile.min(m - i0);
                    let ap = a[i0 * lda + r0..].as_ptr();
                    let cp = blk.add((i0 - m0) * lds + (p - panels.start) * NR);
                    micro::tile(kernel, mr, kc, ap, lda, bp, cp, lds, r0 == 0);
                }
            }
            r0 += kc;
        }
        // The block's rows are final and still in L2.
        for i in m0..m1 {
            let row = &mut block[(i - m0) * lds..][..cols];
            if let Some(q) = &b.quant {
                dequantize(row, q, col0, pa.row_quant[i], kernel);
            }
            epi.apply(i, col0, row);
            std::ptr::copy_nonoverlapping(row.as_ptr(), c.add(i * ldc + col0), cols);
        }
    }
    C_BLOCK.set(block);
}

/// Turns a row of i32 sums (stored in `row`'s bits by the int8 kernel,
/// columns from `col0`) into f32: undoes A's zero point, then both scales.
fn dequantize(row: &mut [f32], q: &ColumnQuant, col0: usize, a: RowQuant, kernel: Kernel) {
    #[cfg(target_arch = "x86_64")]
    if kernel.avx512() {
        // SAFETY: int8 kernels need AVX-512 (checked where weights are packed).
        return unsafe { dequantize_avx512(row, q, col0, a) };
    }
    let _ = kernel;
    dequantize_any(row, q, col0, a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dequantize_avx512(row: &mut [f32], q: &ColumnQuant, col0: usize, a: RowQuant) {
    dequantize_any(row, q, col0, a)
}

/// Compiled once per instruction set through the wrappers above.
#[inline(always)]
fn dequantize_any(row: &mut [f32], q: &ColumnQuant, col0: usize, a: RowQuant) {
    let cols = col0..col0 + row.len();
    for ((v, &sum), &scale) in row
        .iter_mut()
        .zip(&q.sums[cols.clone()])
        .zip(&q.scales[cols])
    {
        let acc = v.to_bits() as i32 - a.zero * sum;
        *v = acc as f32 * (a.scale * scale);
    }
}

/// One row of A for the kernels: f32 bits, bf16 pairs (the last one
/// zero-padded when k is odd), or quads of u8 (see [`RowQuant`]). Returns
/// the row's int8 quantisation (unit for the float kernels).
fn pack_a_row(row: &[f32], kernel: Kernel, out: &mut [u32]) -> RowQuant {
    #[cfg(target_arch = "x86_64")]
    if kernel.avx512() {
        // SAFETY: the kernel's features were checked when its weight was packed.
        return unsafe { pack_a_row_avx512(row, kernel.precision(), out) };
    }
    pack_a_row_any(row, kernel.precision(), out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn pack_a_row_avx512(row: &[f32], precision: Precision, out: &mut [u32]) -> RowQuant {
    pack_a_row_any(row, precision, out)
}

/// Compiled once per instruction set through the wrappers above.
#[inline(always)]
fn pack_a_row_any(row: &[f32], precision: Precision, out: &mut [u32]) -> RowQuant {
    let unit = RowQuant {
        scale: 1.0,
        zero: 0,
    };
    match precision {
        Precision::F32 | Precision::Bf16 => {
            pack_floats(row, precision, out);
            unit
        }
        Precision::Int8 => {
            let quant = RowQuant::of(row);
            let inv = 1.0 / quant.scale;
            let byte = |x: f32| quant.byte(x, inv);
            let quads = row.chunks_exact(4);
            let tail = quads.remainder();
            let n = quads.len();
            for (o, q) in out.iter_mut().zip(quads) {
                *o = byte(q[0]) | byte(q[1]) << 8 | byte(q[2]) << 16 | byte(q[3]) << 24;
            }
            if !tail.is_empty() {
                // The padding bytes meet zero weights: any value will do.
                out[n] = tail
                    .iter()
                    .enumerate()
                    .fold(0, |word, (t, &x)| word | byte(x) << (8 * t));
            }
            quant
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{as_seen_by, lcg, max_diff, Operand};

    struct Plain;

    impl Epilogue for Plain {
        fn apply(&self, _: usize, _: usize, _: &mut [f32]) {}
    }

    /// The AMX kernels' packing, padding and tile addressing, with the tile
    /// instructions emulated: ragged rows (past 32 and past a 96-row block),
    /// partial panels, K across tile steps and K blocks, and odd K.
    #[test]
    fn amx_layouts_match_the_reference_under_emulation() {
        for kernel in [Kernel::AmxBf16, Kernel::AmxInt8] {
            for (m, n, k) in [(1, 32, 8), (13, 37, 301), (33, 64, 64), (97, 40, 1100)] {
                let (x, w) = (lcg(m * k, 5), lcg(n * k, 6));
                let (xs, ws) = (
                    as_seen_by(kernel, &x, k, Operand::A),
                    as_seen_by(kernel, &w, k, Operand::B),
                );
                let want: Vec<f32> = (0..m * n)
                    .map(|i| {
                        let (r, j) = (i / n, i % n);
                        (0..k)
                            .map(|t| xs[r * k + t] as f64 * ws[j * k + t] as f64)
                            .sum::<f64>() as f32
                    })
                    .collect();
                let got = crate::amx::with_emulation(|| {
                    let b = PackedB::pack(&w, n, k, kernel);
                    let mut c = vec![f32::NAN; m * n];
                    // SAFETY: `c` holds m rows of n; the tiles are emulated.
                    unsafe { gemm(&x, k, m, &b, c.as_mut_ptr(), n, &Plain, Threads::One) };
                    c
                });
                let worst = max_diff(&got, &want);
                assert!(
                    worst < 2e-5 * (k as f32).sqrt(),
                    "{kernel:?} m={m} n={n} k={k}: max |Δ| {worst}"
                );
            }
        }
    }
}
