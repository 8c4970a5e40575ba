//! GFLOP/s of one linear layer, candle's matmul against the packed kernels,
//! after the machine's ceiling: FMA (f32), `vdpbf16ps` (bf16) and `vpdpbusd`
//! (int8, GOP/s) chains on registers only, on every thread.
//!
//! `cargo run --release -p altclip-kernels --example linear_rate [M,K,N ...]`
//! (default: the ViT-L/14 batch-8 and XLM-R batch-1 shapes).

use std::time::{Duration, Instant};

use altclip_kernels::{Kernel, PackedLinear};
use candle_core::{Device, Tensor};

// The allocator the `altclip` binary uses, so that fresh outputs cost the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rate(flop: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        f();
        n += 1;
    }
    flop * n as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn main() -> anyhow::Result<()> {
    let shapes: Vec<(usize, usize, usize)> = match std::env::args().skip(1).collect::<Vec<_>>() {
        a if a.is_empty() => vec![
            (2056, 1024, 4096),
            (2056, 4096, 1024),
            (512, 1024, 1024),
            (16, 1024, 4096),
            (16, 4096, 1024),
        ],
        a => a
            .iter()
            .map(|s| {
                let v: Vec<usize> = s.split(',').map(|x| x.parse().expect("M,K,N")).collect();
                (v[0], v[1], v[2])
            })
            .collect(),
    };
    let dev = Device::Cpu;
    println!("threads {}", rayon::current_num_threads());
    #[cfg(target_arch = "x86_64")]
    peak::print();
    for (m, k, n) in shapes {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let b = Tensor::randn(0f32, 0.02, n, &dev)?;
        let flop = 2.0 * (m * k * n) as f64;
        let candle = rate(flop, || {
            let _ = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
        });
        let mut line = format!("M={m} K={k} N={n}: candle {candle:.1}");
        for kernel in Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
            let lin = PackedLinear::new(&w, Some(&b), kernel)?;
            let r = rate(flop, || {
                let _ = lin.forward(&x, None, None).unwrap();
            });
            line += &format!(", {} {r:.1}", kernel.name());
        }
        println!("{line} GFLOP/s");
    }
    Ok(())
}

/// Register-only instruction chains: what the cores can do at most.
#[cfg(target_arch = "x86_64")]
mod peak {
    use std::time::Instant;

    const ITERS: usize = 20_000_000;

    /// `ITERS` rounds of 24 independent `$insn zmmI, zmm30, zmm31` (enough
    /// chains to hide the latency), in assembly so that nothing else runs.
    macro_rules! chains {
        ($insn:literal) => {
            // SAFETY: the caller checked the instruction's feature; the loop
            // touches registers only.
            unsafe {
                std::arch::asm!(
                    "2:",
                    concat!($insn, " zmm0, zmm30, zmm31"), concat!($insn, " zmm1, zmm30, zmm31"),
                    concat!($insn, " zmm2, zmm30, zmm31"), concat!($insn, " zmm3, zmm30, zmm31"),
                    concat!($insn, " zmm4, zmm30, zmm31"), concat!($insn, " zmm5, zmm30, zmm31"),
                    concat!($insn, " zmm6, zmm30, zmm31"), concat!($insn, " zmm7, zmm30, zmm31"),
                    concat!($insn, " zmm8, zmm30, zmm31"), concat!($insn, " zmm9, zmm30, zmm31"),
                    concat!($insn, " zmm10, zmm30, zmm31"), concat!($insn, " zmm11, zmm30, zmm31"),
                    concat!($insn, " zmm12, zmm30, zmm31"), concat!($insn, " zmm13, zmm30, zmm31"),
                    concat!($insn, " zmm14, zmm30, zmm31"), concat!($insn, " zmm15, zmm30, zmm31"),
                    concat!($insn, " zmm16, zmm30, zmm31"), concat!($insn, " zmm17, zmm30, zmm31"),
                    concat!($insn, " zmm18, zmm30, zmm31"), concat!($insn, " zmm19, zmm30, zmm31"),
                    concat!($insn, " zmm20, zmm30, zmm31"), concat!($insn, " zmm21, zmm30, zmm31"),
                    concat!($insn, " zmm22, zmm30, zmm31"), concat!($insn, " zmm23, zmm30, zmm31"),
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) ITERS => _,
                    out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                    out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                    out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                    out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                    out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                    out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                    out("zmm30") _, out("zmm31") _,
                    options(nostack),
                );
            }
        };
    }

    /// FLOP per instruction: 16 lanes × 2 (f32 FMA), or 16 lanes × 2
    /// products × 2 (bf16 pairs).
    fn fma_f32() {
        chains!("vfmadd231ps");
    }

    fn dp_bf16() {
        chains!("vdpbf16ps");
    }

    /// 16 lanes × 4 byte products × 2.
    fn dp_int8() {
        chains!("vpdpbusd");
    }

    /// GFLOP/s of `f` run on every thread at once.
    fn rate(flop_per_insn: f64, f: fn()) -> f64 {
        let threads = rayon::current_num_threads();
        let start = Instant::now();
        rayon::broadcast(|_| f());
        (threads * ITERS * 24) as f64 * flop_per_insn / start.elapsed().as_secs_f64() / 1e9
    }

    pub fn print() {
        if is_x86_feature_detected!("avx512f") {
            let f32_peak = rate(32.0, fma_f32);
            let mut line = format!("ceiling: f32 FMA {f32_peak:.0}");
            if is_x86_feature_detected!("avx512bf16") {
                line += &format!(", bf16 vdpbf16ps {:.0}", rate(64.0, dp_bf16));
            }
            if is_x86_feature_detected!("avx512vnni") {
                line += &format!(", int8 vpdpbusd {:.0}", rate(128.0, dp_int8));
            }
            println!("{line} GFLOP/s");
        }
    }
}
