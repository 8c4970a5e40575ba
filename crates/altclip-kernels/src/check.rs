//! The first-use check: before a process uses a kernel, the kernel computes
//! one small ragged layer (row and column remainders, odd K across a K block,
//! bias, GELU and residual) that is compared with a scalar f64 reference. A
//! wrong kernel (a bug, or an instruction set the CPU reports but computes
//! differently) is then never used: [`crate::Kernel::select`] falls back.

use candle_core::{Device, Tensor};

use crate::cpu::{Kernel, Precision};
use crate::gemm::{bf16_bits, bf16_to_f32, int8_scale, quantize, RowQuant};
use crate::linear::PackedLinear;
use crate::math::{activate_slice, Activation};

/// Deterministic values in [-0.5, 0.5).
pub(crate) fn lcg(n: usize, seed: u64) -> Vec<f32> {
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

/// `act(x·Wᵀ + b) + r` in f64, for row-major `x` `[m, k]`, `w` `[n, k]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    r: &[f32],
    m: usize,
    n: usize,
    k: usize,
    act: Activation,
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = b[j] as f64;
            for t in 0..k {
                s += x[i * k + t] as f64 * w[j * k + t] as f64;
            }
            let mut v = [s as f32];
            activate_slice(act, &mut v);
            out[i * n + j] = v[0] + r[i * n + j];
        }
    }
    out
}

/// Which side of a product an input is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operand {
    /// Activations, `[m, k]`.
    A,
    /// Weights, `[n, k]`.
    B,
}

/// Rows of `k` inputs as `kernel` sees them: rounded to bf16 for the bf16
/// kernels, quantised per row (and dequantised) for the int8 kernels.
pub(crate) fn as_seen_by(kernel: Kernel, v: &[f32], k: usize, side: Operand) -> Vec<f32> {
    match kernel.precision() {
        Precision::F32 => v.to_vec(),
        Precision::Bf16 => v.iter().map(|&x| bf16_to_f32(bf16_bits(x))).collect(),
        Precision::Int8 => v
            .chunks(k)
            .flat_map(|row| {
                let dequantized: Vec<f32> = match side {
                    Operand::A => {
                        let q = RowQuant::of(row);
                        row.iter()
                            .map(|&x| (q.byte(x, 1.0 / q.scale) as i32 - q.zero) as f32 * q.scale)
                            .collect()
                    }
                    Operand::B => {
                        let scale = int8_scale(row.iter().fold(0f32, |m, x| m.max(x.abs())));
                        row.iter()
                            .map(|&x| quantize(x, 1.0 / scale) as f32 * scale)
                            .collect()
                    }
                };
                dequantized
            })
            .collect(),
    }
}

/// The largest element-wise |a − b| (NaN counts as infinitely wrong).
pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            let d = (a - b).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0f32, f32::max)
}

/// Runs the check layer on `kernel` (which must run on this CPU); the error
/// says how far off it was.
pub(crate) fn self_check(kernel: Kernel) -> Result<(), String> {
    // K crosses a K block in every precision (256 packed rows).
    let (m, n, k) = (13, 37, 1031);
    let (x, w, b, r) = (lcg(m * k, 1), lcg(n * k, 2), lcg(n, 3), lcg(m * n, 4));
    let want = reference(
        &as_seen_by(kernel, &x, k, Operand::A),
        &as_seen_by(kernel, &w, k, Operand::B),
        &b,
        &r,
        m,
        n,
        k,
        Activation::GeluErf,
    );
    let run = || -> crate::Result<Vec<f32>> {
        let lin = PackedLinear::from_f32(&w, n, k, Some(b.clone()), kernel)?;
        let dev = Device::Cpu;
        let xt = Tensor::from_vec(x.clone(), (m, k), &dev)?;
        let rt = Tensor::from_vec(r.clone(), (m, n), &dev)?;
        let y = lin.forward(&xt, Some(Activation::GeluErf), Some(&rt))?;
        Ok(y.flatten_all()?.to_vec1::<f32>()?)
    };
    let got = run().map_err(|e| e.to_string())?;
    let worst = max_diff(&got, &want);
    let tol = 2e-5 * (k as f32).sqrt();
    if worst < tol {
        Ok(())
    } else {
        Err(format!(
            "max |Δ| {worst} against the reference (allowed {tol})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amx_kernels_pass_the_check_with_their_tiles_emulated() {
        for kernel in [Kernel::AmxBf16, Kernel::AmxInt8] {
            assert_eq!(
                crate::amx::with_emulation(|| self_check(kernel)),
                Ok(()),
                "{kernel:?}"
            );
        }
    }

    #[test]
    fn every_kernel_here_passes_its_check() {
        for kernel in Kernel::ALL {
            if kernel.runs_here() {
                assert_eq!(self_check(kernel), Ok(()), "{kernel:?}");
            } else {
                eprintln!("{}", kernel.skip_line());
            }
        }
    }
}
