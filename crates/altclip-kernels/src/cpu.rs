//! The kernels this CPU runs, and the one per precision this process uses.

use std::sync::OnceLock;

/// What a kernel multiplies in; accumulation is always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 products (FMA).
    F32,
    /// bf16 products, f32 sums (PyTorch autocast's contract).
    Bf16,
    /// int8 products, i32 sums: weights quantised per output channel at
    /// pack time, activations per row at each call (both symmetric), the
    /// result dequantised to f32 in the epilogue.
    Int8,
}

/// A micro-kernel: one instruction set and the precision it multiplies in.
/// Weights are packed for one kernel, and everything that runs on them (the
/// GEMM, its epilogue, attention's softmax) is compiled for its instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX2 + FMA: 6×16 f32 tiles in ymm registers.
    Avx2,
    /// AVX-512F: 12×32 f32 tiles in zmm registers.
    Avx512,
    /// AVX512-BF16 `vdpbf16ps`: 12×32 tiles, bf16 products, f32 sums.
    Avx512Bf16,
    /// AVX512-VNNI `vpdpbusd`: 12×32 tiles of u8 × i8 products, i32 sums.
    Avx512Vnni,
    /// AMX-BF16 `tdpbf16ps`: 32×32 tiles in tile registers, bf16 products,
    /// f32 sums; the epilogue runs on AVX-512.
    AmxBf16,
    /// AMX-INT8 `tdpbusd`: 32×32 tiles of u8 × i8 products, i32 sums.
    AmxInt8,
}

impl Kernel {
    /// Every kernel, fastest first within each precision.
    pub const ALL: [Kernel; 6] = [
        Kernel::Avx512,
        Kernel::Avx2,
        Kernel::AmxBf16,
        Kernel::Avx512Bf16,
        Kernel::AmxInt8,
        Kernel::Avx512Vnni,
    ];

    /// What this kernel multiplies in.
    pub fn precision(self) -> Precision {
        match self {
            Kernel::Avx2 | Kernel::Avx512 => Precision::F32,
            Kernel::Avx512Bf16 | Kernel::AmxBf16 => Precision::Bf16,
            Kernel::Avx512Vnni | Kernel::AmxInt8 => Precision::Int8,
        }
    }

    /// True for the AMX kernels (tile registers, K and rows padded to tiles).
    pub fn amx(self) -> bool {
        matches!(self, Kernel::AmxBf16 | Kernel::AmxInt8)
    }

    /// The float kernel of the same instruction set: what attention's `QKᵀ`
    /// and `PV` beside int8 layers run on (probabilities and per-head
    /// products lose too much in 8 bits), and the layers a model keeps out
    /// of int8.
    pub fn float_kernel(self) -> Kernel {
        match self {
            Kernel::Avx512Vnni | Kernel::AmxInt8 => Kernel::Avx512,
            k => k,
        }
    }

    /// A short name for logs, `info` and `bench`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx2 => "avx2 f32",
            Kernel::Avx512 => "avx512f f32",
            Kernel::Avx512Bf16 => "avx512-bf16",
            Kernel::Avx512Vnni => "avx512-vnni int8",
            Kernel::AmxBf16 => "amx-bf16",
            Kernel::AmxInt8 => "amx-int8",
        }
    }

    /// Whether this CPU has the kernel's instructions (detected once).
    pub fn runs_here(self) -> bool {
        self.missing().is_empty()
    }

    /// The `/proc/cpuinfo` flags this kernel needs that this CPU (or OS)
    /// lacks; empty when it runs here. For skip lines and warnings.
    pub fn missing(self) -> Vec<&'static str> {
        let f = features();
        let amx = f.amx;
        let needs: &[(&'static str, bool)] = match self {
            Kernel::Avx2 => &[("avx2 and fma, or avx512f", f.avx2_fma || f.avx512f)],
            Kernel::Avx512 => &[("avx512f", f.avx512f)],
            Kernel::Avx512Bf16 => &[("avx512f", f.avx512f), ("avx512_bf16", f.avx512bf16)],
            Kernel::Avx512Vnni => &[("avx512f", f.avx512f), ("avx512_vnni", f.avx512vnni)],
            Kernel::AmxBf16 => &[
                ("avx512f", f.avx512f),
                ("amx_tile", amx.tile),
                ("amx_bf16", amx.bf16),
                (
                    "the kernel's permission for tile state (arch_prctl)",
                    amx.permitted || !amx.tile,
                ),
            ],
            Kernel::AmxInt8 => &[
                ("avx512f", f.avx512f),
                ("amx_tile", amx.tile),
                ("amx_int8", amx.int8),
                (
                    "the kernel's permission for tile state (arch_prctl)",
                    amx.permitted || !amx.tile,
                ),
            ],
        };
        needs
            .iter()
            .filter(|(_, has)| !has)
            .map(|(flag, _)| *flag)
            .collect()
    }

    /// The line a test prints when it skips this kernel.
    pub fn skip_line(self) -> String {
        format!(
            "skipped: the {} kernel needs {}, which this CPU lacks",
            self.name(),
            self.missing().join(", ")
        )
    }

    /// The kernel this process uses for `precision`: the fastest this CPU
    /// runs that passes its first-use check, narrowed by `ALTCLIP_KERNELS`
    /// (`candle`: none; a kernel's name, e.g. `avx2`: that kernel for its
    /// precision and none for the others). Decided once per process; a
    /// kernel that fails its check is reported on stderr and skipped.
    pub fn select(precision: Precision) -> Option<Kernel> {
        static CHOICE: OnceLock<[Option<Kernel>; 3]> = OnceLock::new();
        let [f32, bf16, int8] = *CHOICE.get_or_init(|| {
            let forced = std::env::var("ALTCLIP_KERNELS").ok();
            candidates(forced.as_deref()).map(|c| first_passing(&c, &mut first_use_check))
        });
        match precision {
            Precision::F32 => f32,
            Precision::Bf16 => bf16,
            Precision::Int8 => int8,
        }
    }

    /// The name `ALTCLIP_KERNELS` takes for this kernel.
    pub fn flag_name(self) -> &'static str {
        match self {
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Avx512Bf16 => "avx512-bf16",
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::AmxBf16 => "amx-bf16",
            Kernel::AmxInt8 => "amx-int8",
        }
    }

    /// True for the kernels whose epilogue and softmax compile for AVX-512.
    pub(crate) fn avx512(self) -> bool {
        !matches!(self, Kernel::Avx2)
    }
}

/// The f32, bf16 and int8 kernels worth trying, best first, for a value of
/// `ALTCLIP_KERNELS`: every kernel this CPU runs, or the one named.
fn candidates(forced: Option<&str>) -> [Vec<Kernel>; 3] {
    let named = forced.and_then(|f| Kernel::ALL.into_iter().find(|k| k.flag_name() == f));
    let of = |p: Precision| -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.precision() == p && k.runs_here())
            .filter(|k| match (forced, named) {
                (Some("candle"), _) => false,
                (_, Some(n)) => *k == n,
                _ => true,
            })
            .collect()
    };
    [of(Precision::F32), of(Precision::Bf16), of(Precision::Int8)]
}

/// The check a kernel passes before a process uses it; AMX kernels run it in
/// a child process first (see [`crate::amx::isolated`]).
fn first_use_check(kernel: Kernel) -> Result<(), String> {
    if kernel.amx() {
        crate::amx::isolated(&mut || crate::check::self_check(kernel))
    } else {
        crate::check::self_check(kernel)
    }
}

/// The first of `candidates` that `check` accepts; each refusal is reported.
fn first_passing(
    candidates: &[Kernel],
    check: &mut dyn FnMut(Kernel) -> Result<(), String>,
) -> Option<Kernel> {
    candidates.iter().copied().find(|&k| match check(k) {
        Ok(()) => true,
        Err(why) => {
            eprintln!(
                "warning: the {} kernel failed its first-use check ({why}); not using it",
                k.name()
            );
            false
        }
    })
}

/// The instruction-set extensions the kernels use.
#[derive(Debug, Clone, Copy, Default)]
struct Features {
    avx2_fma: bool,
    avx512f: bool,
    avx512bf16: bool,
    avx512vnni: bool,
    amx: crate::amx::AmxSupport,
}

fn features() -> Features {
    static FOUND: OnceLock<Features> = OnceLock::new();
    *FOUND.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    Features {
        avx2_fma: is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        avx512f: is_x86_feature_detected!("avx512f"),
        avx512bf16: is_x86_feature_detected!("avx512bf16"),
        avx512vnni: is_x86_feature_detected!("avx512vnni"),
        amx: crate::amx::detect(),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_choices_narrow_what_the_cpu_offers() {
        assert_eq!(candidates(Some("candle")), [vec![], vec![], vec![]]);
        let [f32, bf16, int8] = candidates(Some("avx2"));
        assert!(int8.is_empty());
        assert_eq!(
            f32,
            [Kernel::Avx2]
                .into_iter()
                .filter(|k| k.runs_here())
                .collect::<Vec<_>>()
        );
        assert!(bf16.is_empty());
        let [f32, bf16, _] = candidates(None);
        assert!(f32
            .iter()
            .all(|k| k.runs_here() && k.precision() == Precision::F32));
        assert!(bf16
            .iter()
            .all(|k| k.runs_here() && k.precision() == Precision::Bf16));
        if Kernel::Avx512.runs_here() {
            assert_eq!(f32[0], Kernel::Avx512);
        }
        for k in Kernel::ALL {
            assert_eq!(
                Kernel::ALL
                    .iter()
                    .filter(|o| o.flag_name() == k.flag_name())
                    .count(),
                1
            );
        }
    }

    #[test]
    fn a_kernel_that_fails_its_check_is_passed_over() {
        let both = [Kernel::Avx512, Kernel::Avx2];
        let mut fail_avx512 = |k: Kernel| match k {
            Kernel::Avx512 => Err("wrong".to_string()),
            _ => Ok(()),
        };
        assert_eq!(first_passing(&both, &mut fail_avx512), Some(Kernel::Avx2));
        let mut fail_all = |_: Kernel| Err("wrong".to_string());
        assert_eq!(first_passing(&both, &mut fail_all), None);
        assert_eq!(first_passing(&both, &mut |_| Ok(())), Some(Kernel::Avx512));
    }
}
