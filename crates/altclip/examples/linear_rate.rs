//! GFLOP/s of one linear layer, candle's matmul against the packed kernels.
//!
//! `cargo run --release -p altclip --example linear_rate [M,K,N ...]`
//! (default: the ViT-L/14 batch-8 and XLM-R batch-1 shapes).

use std::time::{Duration, Instant};

use altclip::kernels::{self, PackedLinear, Precision};
use candle_core::{Device, Tensor};

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
        a if a.is_empty() => vec![(2056, 1024, 4096), (2056, 4096, 1024), (512, 1024, 1024), (16, 1024, 4096), (16, 4096, 1024)],
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
    for (m, k, n) in shapes {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let b = Tensor::randn(0f32, 0.02, n, &dev)?;
        let flop = 2.0 * (m * k * n) as f64;
        let candle = rate(flop, || {
            let _ = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        });
        let mut line = format!("M={m} K={k} N={n}: candle {candle:.1}");
        for p in [Precision::F32, Precision::Bf16] {
            if kernels::supports(p) {
                let lin = PackedLinear::new(&w, Some(&b), p)?;
                let r = rate(flop, || {
                    let _ = lin.forward(&x, None, None).unwrap();
                });
                line += &format!(", {p:?} {r:.1}");
            }
        }
        println!("{line} GFLOP/s");
    }
    Ok(())
}
