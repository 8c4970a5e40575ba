//! CPU fast path for the linear layers and attention: weights packed once at
//! load time into the layout of our micro-kernels (f32 FMA with AVX-512 or
//! AVX2, or bf16 dot products with f32 sums where the CPU has AVX512-BF16),
//! with bias, activation and residual fused into the GEMM's epilogue.
//!
//! Chosen at run time: on other CPUs, other devices, or while training (the
//! kernels have no backward pass) the layers use candle's matmul instead.
//! `ALTCLIP_KERNELS=candle` turns the fast path off and `=avx2` keeps to the
//! AVX2 kernel, for comparisons.

mod attention;
mod cpu;
mod gemm;
pub mod math;
mod softmax;

pub use attention::{attention, mask_supported};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};

pub use cpu::Isa;
pub use gemm::Precision;
use gemm::{Epilogue, PackedB};

use crate::config::Activation;
use crate::error::Result;

/// True when this CPU runs the kernels of `precision` and they are not
/// switched off by `ALTCLIP_KERNELS=candle`.
pub fn supports(precision: Precision) -> bool {
    let (isa, bf16) = cpu::chosen();
    match precision {
        Precision::F32 => isa.is_some(),
        Precision::Bf16 => bf16,
    }
}

/// Whether the hardware runs the kernels of `precision` at all.
#[cfg(test)]
fn cpu_has(precision: Precision) -> bool {
    let (isa, bf16) = cpu::detected();
    match precision {
        Precision::F32 => isa.is_some(),
        Precision::Bf16 => bf16,
    }
}

/// The kernel that serves linear layers of `dtype` on the CPU, if any: f32
/// weights take the f32 kernel, bf16 weights the bf16 one.
pub fn precision_for(dtype: DType) -> Option<Precision> {
    let p = match dtype {
        DType::F32 => Precision::F32,
        DType::BF16 => Precision::Bf16,
        _ => return None,
    };
    supports(p).then_some(p)
}

/// How a model requested in `dtype` runs on `device`: the dtype of its
/// activations, and the dtype its linear layers compute in where that differs.
/// bf16 on a CPU with AVX512-BF16 keeps the activations (LayerNorm, softmax,
/// residuals) in f32 and computes only the matmuls in bf16, as PyTorch's
/// autocast does; candle alone would widen bf16 to f32 in every op.
pub fn plan(dtype: DType, device: &Device) -> (DType, Option<DType>) {
    if dtype == DType::BF16 && device.is_cpu() && supports(Precision::Bf16) {
        (DType::F32, Some(DType::BF16))
    } else {
        (dtype, None)
    }
}

/// One line naming the path linear layers of a model requested in `dtype`
/// take on `device`, for `bench` and `info`.
pub fn describe(dtype: DType, device: &Device) -> &'static str {
    let (_, linear) = plan(dtype, device);
    match device
        .is_cpu()
        .then(|| precision_for(linear.unwrap_or(dtype)))
        .flatten()
    {
        Some(Precision::F32) if cpu::chosen().0 == Some(Isa::Avx2) => {
            "avx2 f32 kernels (packed weights)"
        }
        Some(Precision::F32) => "avx512f f32 kernels (packed weights)",
        Some(Precision::Bf16) => "avx512-bf16 kernels (packed bf16 weights, f32 sums)",
        None => "candle matmul",
    }
}

/// A linear layer's weight and bias, packed for the kernels.
#[derive(Debug)]
pub struct PackedLinear {
    weight: PackedB,
    bias: Option<Vec<f32>>,
}

impl PackedLinear {
    /// Packs `weight` (`[out, in]`, any float dtype) and `bias` (`[out]`).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, precision: Precision) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = match bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Self::from_f32(&w, n, k, bias, precision))
    }

    /// Packs a row-major `[n, k]` weight given as f32.
    pub fn from_f32(
        weight: &[f32],
        n: usize,
        k: usize,
        bias: Option<Vec<f32>>,
        precision: Precision,
    ) -> Self {
        Self {
            weight: PackedB::pack(weight, n, k, precision),
            bias,
        }
    }

    /// The micro-kernel the weight is packed for.
    pub fn precision(&self) -> Precision {
        self.weight.precision
    }

    pub fn out_dim(&self) -> usize {
        self.weight.n
    }

    pub fn in_dim(&self) -> usize {
        self.weight.k
    }

    /// The weight (as f32) and bias as tensors, for the candle fallback.
    pub fn unpack(&self, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
        let w = Tensor::from_vec(self.weight.unpack(), (self.weight.n, self.weight.k), device)?;
        let b = match &self.bias {
            Some(b) => Some(Tensor::from_slice(b, b.len(), device)?),
            None => None,
        };
        Ok((w, b))
    }

    /// `act(x·Wᵀ + b) + residual` for contiguous f32 `x` `[.., in]` on the CPU.
    pub fn forward(
        &self,
        x: &Tensor,
        act: Option<Activation>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let x = x.contiguous()?;
        let op = LinearOp { linear: self, act };
        Ok(match residual {
            Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op)?,
            None => x.apply_op1_no_bwd(&op)?,
        })
    }

    fn run(
        &self,
        x: &[f32],
        dims: &[usize],
        act: Option<Activation>,
        residual: Option<&[f32]>,
    ) -> (Vec<f32>, Shape) {
        let (n, k) = (self.weight.n, self.weight.k);
        let m = x.len() / k;
        let epi = Fused {
            bias: self.bias.as_deref(),
            act,
            residual,
            n,
        };
        let mut out = Vec::<f32>::with_capacity(m * n);
        // SAFETY: `out` has room for m × n floats, each of which `gemm`
        // writes exactly once, before `set_len`.
        unsafe {
            gemm::gemm(
                x,
                k,
                m,
                &self.weight,
                out.as_mut_ptr(),
                n,
                &epi,
                gemm::Threads::Auto,
            );
            out.set_len(m * n);
        }
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank checked") = n;
        (out, Shape::from(shape))
    }
}

/// `act(acc + bias) + residual` on each finished tile.
struct Fused<'a> {
    bias: Option<&'a [f32]>,
    act: Option<Activation>,
    residual: Option<&'a [f32]>,
    n: usize,
}

impl Epilogue for Fused<'_> {
    fn apply(&self, row: usize, col: usize, tile: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match cpu::detected().0 {
            // SAFETY: the features were detected.
            Some(Isa::Avx512) => return unsafe { fused_tile_avx512(self, row, col, tile) },
            Some(Isa::Avx2) => return unsafe { fused_tile_avx2(self, row, col, tile) },
            None => {}
        }
        fused_tile(self, row, col, tile)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fused_tile_avx512(f: &Fused, row: usize, col: usize, tile: &mut [f32]) {
    fused_tile(f, row, col, tile)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fused_tile_avx2(f: &Fused, row: usize, col: usize, tile: &mut [f32]) {
    fused_tile(f, row, col, tile)
}

/// Compiled once per instruction set through the wrappers above.
#[inline(always)]
fn fused_tile(f: &Fused, row: usize, col: usize, tile: &mut [f32]) {
    if let Some(b) = f.bias {
        for (t, b) in tile.iter_mut().zip(&b[col..]) {
            *t += b;
        }
    }
    if let Some(act) = f.act {
        math::activate_slice(act, tile);
    }
    if let Some(r) = f.residual {
        for (t, r) in tile.iter_mut().zip(&r[row * f.n + col..]) {
            *t += r;
        }
    }
}

struct LinearOp<'a> {
    linear: &'a PackedLinear,
    act: Option<Activation>,
}

/// The contiguous f32 data of a CPU tensor whose last dimension is `k`.
pub(super) fn f32_input<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    k: usize,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("packed linear: {what} must be f32, got {:?}", s.dtype());
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("packed linear: {what} must be contiguous");
    };
    if l.dims().last() != Some(&k) {
        candle_core::bail!(
            "packed linear: {what} has shape {:?}, expected last dimension {k}",
            l.dims()
        );
    }
    Ok(&v[start..end])
}

impl CustomOp1 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_input(s, l, self.linear.in_dim(), "input")?;
        let (out, shape) = self.linear.run(x, l.dims(), self.act, None);
        Ok((CpuStorage::F32(out), shape))
    }
}

impl CustomOp2 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "packed-linear-residual"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_input(s, l, self.linear.in_dim(), "input")?;
        let r = f32_input(rs, rl, self.linear.out_dim(), "residual")?;
        if r.len() / self.linear.out_dim() != x.len() / self.linear.in_dim() {
            candle_core::bail!(
                "packed linear: residual {:?} does not match input {:?}",
                rl.dims(),
                l.dims()
            );
        }
        let (out, shape) = self.linear.run(x, l.dims(), self.act, Some(r));
        Ok((CpuStorage::F32(out), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
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

    /// `act(x·Wᵀ + b) + r` in f64, the reference for both kernels.
    #[allow(clippy::too_many_arguments)]
    fn reference(
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
                math::activate_slice(act, &mut v);
                out[i * n + j] = v[0] + r[i * n + j];
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    fn check(precision: Precision, m: usize, n: usize, k: usize, tol: f32) {
        if !cpu_has(precision) {
            eprintln!("skipped: this CPU lacks the {precision:?} kernel's features");
            return;
        }
        let dev = Device::Cpu;
        let (x, w, b, r) = (lcg(m * k, 1), lcg(n * k, 2), lcg(n, 3), lcg(m * n, 4));
        let (xr, wr) = match precision {
            // The bf16 kernel rounds its inputs: compare with rounded inputs.
            Precision::Bf16 => {
                let round = |v: &[f32]| {
                    v.iter()
                        .map(|&x| gemm::bf16_to_f32(gemm::bf16_bits(x)))
                        .collect::<Vec<_>>()
                };
                (round(&x), round(&w))
            }
            Precision::F32 => (x.clone(), w.clone()),
        };
        let want = reference(&xr, &wr, &b, &r, m, n, k, Activation::Gelu);
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let bt = Tensor::from_vec(b, n, &dev).unwrap();
        let lin = PackedLinear::new(&wt, Some(&bt), precision).unwrap();
        let xt = Tensor::from_vec(x, (1, m, k), &dev).unwrap();
        let rt = Tensor::from_vec(r, (1, m, n), &dev).unwrap();
        let got = lin.forward(&xt, Some(Activation::Gelu), Some(&rt)).unwrap();
        assert_eq!(got.dims(), &[1, m, n]);
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = max_diff(&got, &want);
        assert!(
            worst < tol,
            "{precision:?} m={m} n={n} k={k}: max |Δ| {worst}"
        );
        if precision == Precision::F32 {
            let (w2, _) = lin.unpack(&dev).unwrap();
            assert_eq!(
                w2.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                wt.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            // The AVX2 kernel too, which AVX-512 CPUs also run.
            let xs = xt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let rs = rt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let epi = Fused {
                bias: lin.bias.as_deref(),
                act: Some(Activation::Gelu),
                residual: Some(&rs),
                n,
            };
            let mut out = vec![f32::NAN; m * n];
            // SAFETY: `out` holds m × n floats; AVX2 is implied by the
            // f32 kernel being available (AVX-512F or AVX2 + FMA).
            unsafe {
                gemm::gemm_on(
                    Isa::Avx2,
                    &xs,
                    k,
                    m,
                    &lin.weight,
                    out.as_mut_ptr(),
                    n,
                    &epi,
                    gemm::Threads::Auto,
                )
            };
            let worst = max_diff(&out, &want);
            assert!(worst < tol, "AVX2 m={m} n={n} k={k}: max |Δ| {worst}");
        }
    }

    #[test]
    fn f32_kernel_matches_reference_on_ragged_shapes() {
        // Row remainders (1..12), partial panels, K across block boundaries.
        for (m, n, k) in [
            (1, 32, 8),
            (13, 37, 300),
            (25, 96, 513),
            (7, 5, 3),
            (64, 160, 1030),
        ] {
            check(Precision::F32, m, n, k, 2e-5 * (k as f32).sqrt());
        }
    }

    #[test]
    fn bf16_kernel_matches_reference_on_ragged_shapes() {
        for (m, n, k) in [
            (1, 32, 8),
            (13, 37, 301),
            (25, 96, 513),
            (7, 5, 3),
            (64, 160, 1030),
        ] {
            check(Precision::Bf16, m, n, k, 2e-5 * (k as f32).sqrt());
        }
    }

    #[test]
    fn empty_batch_gives_an_empty_output() {
        for p in [Precision::F32, Precision::Bf16]
            .into_iter()
            .filter(|&p| cpu_has(p))
        {
            let dev = Device::Cpu;
            let w = Tensor::ones((40, 24), DType::F32, &dev).unwrap();
            let lin = PackedLinear::new(&w, None, p).unwrap();
            let x = Tensor::zeros((0, 3, 24), DType::F32, &dev).unwrap();
            assert_eq!(lin.forward(&x, None, None).unwrap().dims(), &[0, 3, 40]);
        }
    }

    #[test]
    fn multithreaded_split_matches_reference() {
        // Big enough to take the parallel path.
        check(Precision::F32, 70, 200, 300, 5e-4);
        check(Precision::Bf16, 70, 200, 300, 5e-4);
    }
}
