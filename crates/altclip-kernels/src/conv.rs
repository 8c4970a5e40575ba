//! 2-D convolution of channels-last (`[B, H, W, C]`) tensors as a packed
//! GEMM. Each band of output rows is unfolded (im2col) into a per-thread
//! buffer and multiplied by the packed weight; bias, a per-sample bias, the
//! activation and a residual are applied in the GEMM's epilogue. Bands run
//! in parallel, so the unfolded input is never held whole (at 512² it would
//! take gigabytes).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::cpu::Kernel;
use crate::data::with_contiguous;
use crate::error::{Error, Result};
use crate::gemm::{self, OutPtr, PackedB, Threads};
use crate::linear::Fused;
use crate::math::Activation;

/// Rows of the unfolded input each GEMM call takes: enough to reuse each
/// packed weight panel, few enough that the band stays in L2.
const BAND_ROWS: usize = 384;

/// Kernel size, stride and zero padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// `(kh, kw)`.
    pub kernel: (usize, usize),
    pub stride: usize,
    /// Zero rows and columns added `[top, bottom, left, right]`.
    pub padding: [usize; 4],
}

impl ConvGeometry {
    /// A square kernel with the same padding on every side (PyTorch's `Conv2d`).
    pub fn square(size: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel: (size, size),
            stride,
            padding: [padding; 4],
        }
    }

    /// The output's `(height, width)` for an input of `h` × `w`, or `None`
    /// when the padded input is smaller than the kernel.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let [top, bottom, left, right] = self.padding;
        let (kh, kw) = self.kernel;
        let (ph, pw) = (h + top + bottom, w + left + right);
        if self.stride == 0 || ph < kh || pw < kw {
            return None;
        }
        Some(((ph - kh) / self.stride + 1, (pw - kw) / self.stride + 1))
    }

    fn pointwise(&self) -> bool {
        self.kernel == (1, 1) && self.stride == 1 && self.padding == [0; 4]
    }
}

/// A convolution's weight and bias, packed for one kernel.
#[derive(Debug)]
pub struct PackedConv2d {
    weight: PackedB,
    bias: Option<Vec<f32>>,
    in_channels: usize,
    geometry: ConvGeometry,
}

impl PackedConv2d {
    /// Packs a PyTorch `[out, in, kh, kw]` weight (row-major f32) and a bias
    /// of `out` for `kernel`.
    pub fn from_f32(
        weight: &[f32],
        out_channels: usize,
        in_channels: usize,
        geometry: ConvGeometry,
        bias: Option<Vec<f32>>,
        kernel: Kernel,
    ) -> Result<Self> {
        if !kernel.runs_here() && !crate::amx::emulating() {
            return Err(Error::NotOnThisCpu(kernel));
        }
        let (kh, kw) = geometry.kernel;
        let taps = kh * kw;
        let k = taps * in_channels;
        if out_channels.checked_mul(k) != Some(weight.len())
            || bias.as_ref().is_some_and(|b| b.len() != out_channels)
            || geometry.stride == 0
            || k == 0
        {
            return Err(Error::Unsupported {
                op: "packed conv2d",
                reason: format!(
                    "a [{out_channels}, {in_channels}, {kh}, {kw}] weight (stride {}) cannot hold {} values with a bias of {:?}",
                    geometry.stride,
                    weight.len(),
                    bias.as_ref().map(Vec::len)
                ),
            });
        }
        // [out, in, kh, kw] → [out, kh, kw, in]: the order im2col unfolds.
        let mut reordered = vec![0f32; weight.len()];
        for o in 0..out_channels {
            for c in 0..in_channels {
                for t in 0..taps {
                    reordered[o * k + t * in_channels + c] =
                        weight[(o * in_channels + c) * taps + t];
                }
            }
        }
        Ok(Self {
            weight: PackedB::pack(&reordered, out_channels, k, kernel),
            bias,
            in_channels,
            geometry,
        })
    }

    /// The kernel the weight is packed for.
    pub fn kernel(&self) -> Kernel {
        self.weight.kernel
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.n
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// The kernel size, stride and padding.
    pub fn geometry(&self) -> ConvGeometry {
        self.geometry
    }

    /// `act(conv(x) + bias + sample_bias[b]) + residual` for `x`
    /// `[B, H, W, in]` (contiguous f32 on the CPU); `sample_bias` holds
    /// `B × out` values (a ResNet's time embedding), `residual` the output's
    /// shape `[B, Ho, Wo, out]`.
    pub fn forward(
        &self,
        x: &Tensor,
        sample_bias: Option<&[f32]>,
        act: Option<Activation>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let refuse = |reason: String| Error::Unsupported {
            op: "packed conv2d",
            reason,
        };
        let (b, h, w, c) = x.dims4()?;
        let n = self.out_channels();
        let Some((ho, wo)) = self.geometry.output_size(h, w) else {
            return Err(refuse(format!(
                "input {:?} is smaller than the {:?} kernel",
                x.dims(),
                self.geometry.kernel
            )));
        };
        if c != self.in_channels {
            return Err(refuse(format!(
                "input {:?} has {c} channels, the weight takes {}",
                x.dims(),
                self.in_channels
            )));
        }
        if sample_bias.is_some_and(|s| s.len() != b * n) {
            return Err(refuse(format!(
                "a per-sample bias of {} values for {b} samples of {n} channels",
                sample_bias.map_or(0, <[f32]>::len)
            )));
        }
        if let Some(r) = residual {
            if r.dims() != [b, ho, wo, n] {
                return Err(refuse(format!(
                    "residual {:?} for an output of [{b}, {ho}, {wo}, {n}]",
                    r.dims()
                )));
            }
        }
        let x = x.contiguous()?;
        let residual = residual.map(Tensor::contiguous).transpose()?;
        let out = with_contiguous(&x, "packed conv2d", "input", |xs| match &residual {
            Some(r) => with_contiguous(r, "packed conv2d", "residual", |rs| {
                self.run(xs, (b, h, w), (ho, wo), sample_bias, act, Some(rs))
            }),
            None => Ok(self.run(xs, (b, h, w), (ho, wo), sample_bias, act, None)),
        })??;
        Ok(Tensor::from_vec(out, (b, ho, wo, n), x.device())?)
    }

    fn run(
        &self,
        x: &[f32],
        (b, h, w): (usize, usize, usize),
        (ho, wo): (usize, usize),
        sample_bias: Option<&[f32]>,
        act: Option<Activation>,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        let (n, c, k) = (self.weight.n, self.in_channels, self.weight.k);
        // Per sample, the bias the epilogue adds: the layer's plus the sample's.
        let biases: Vec<Option<Vec<f32>>> = (0..b)
            .map(|s| match (&self.bias, sample_bias) {
                (None, None) => None,
                (Some(bias), None) => Some(bias.clone()),
                (bias, Some(extra)) => {
                    let extra = &extra[s * n..][..n];
                    Some(match bias {
                        Some(bias) => bias.iter().zip(extra).map(|(a, e)| a + e).collect(),
                        None => extra.to_vec(),
                    })
                }
            })
            .collect();
        let fused = |s: usize, first_row: usize| Fused {
            kernel: self.kernel(),
            bias: biases[s].as_deref(),
            act,
            residual: residual.map(|r| &r[(s * ho * wo + first_row) * n..]),
            n,
        };
        let mut out = Vec::<f32>::with_capacity(b * ho * wo * n);
        let out_ptr = OutPtr(out.as_mut_ptr());
        if self.geometry.pointwise() {
            for s in 0..b {
                let rows = h * w;
                // SAFETY: each call writes its sample's rows × n outputs,
                // all within `out`'s capacity; the kernel was checked to run
                // here when the weight was packed.
                unsafe {
                    gemm::gemm(
                        &x[s * rows * c..][..rows * c],
                        c,
                        rows,
                        &self.weight,
                        out_ptr.get().add(s * rows * n),
                        n,
                        &fused(s, 0),
                        Threads::Auto,
                    )
                };
            }
        } else {
            let band = (BAND_ROWS / wo).clamp(1, ho);
            let bands = ho.div_ceil(band);
            (0..b * bands).into_par_iter().for_each(|task| {
                let (s, y0) = (task / bands, task % bands * band);
                let y1 = (y0 + band).min(ho);
                let m = (y1 - y0) * wo;
                let mut cols = COLUMNS.take();
                if cols.len() < m * k {
                    cols.resize(m * k, 0.0);
                }
                self.unfold(
                    &x[s * h * w * c..][..h * w * c],
                    (h, w),
                    wo,
                    y0..y1,
                    &mut cols[..m * k],
                );
                // SAFETY: this task alone writes rows y0..y1 of sample s.
                unsafe {
                    gemm::gemm(
                        &cols,
                        k,
                        m,
                        &self.weight,
                        out_ptr.get().add((s * ho * wo + y0 * wo) * n),
                        n,
                        &fused(s, y0 * wo),
                        Threads::One,
                    )
                };
                COLUMNS.set(cols);
            });
        }
        // SAFETY: the GEMMs above wrote every one of the b·ho·wo·n outputs.
        unsafe { out.set_len(b * ho * wo * n) };
        out
    }

    /// Writes the patches of output rows `rows` (one `[kh, kw, C]` patch per
    /// output pixel, zeros where it overhangs the input) over all of `cols`.
    fn unfold(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        wo: usize,
        rows: std::ops::Range<usize>,
        cols: &mut [f32],
    ) {
        let c = self.in_channels;
        let (kh, kw) = self.geometry.kernel;
        let [top, _, left, _] = self.geometry.padding;
        let s = self.geometry.stride;
        let k = kh * kw * c;
        for (r, y) in rows.enumerate() {
            for xo in 0..wo {
                let patch = &mut cols[(r * wo + xo) * k..][..k];
                for ky in 0..kh {
                    let iy = (y * s + ky).wrapping_sub(top);
                    for kx in 0..kw {
                        let ix = (xo * s + kx).wrapping_sub(left);
                        let dst = &mut patch[(ky * kw + kx) * c..][..c];
                        if iy < h && ix < w {
                            dst.copy_from_slice(&x[(iy * w + ix) * c..][..c]);
                        } else {
                            dst.fill(0.0);
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's im2col buffer, grown to the largest band it has seen.
    static COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// candle's NCHW convolution of `x` after padding it with zeros.
    fn reference(x: &Tensor, w: &Tensor, bias: &Tensor, g: ConvGeometry) -> Tensor {
        let [top, bottom, left, right] = g.padding;
        let x = x.pad_with_zeros(2, top, bottom).unwrap();
        let x = x.pad_with_zeros(3, left, right).unwrap();
        x.conv2d(w, 0, g.stride, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, (), 1, 1)).unwrap())
            .unwrap()
    }

    fn check(kernel: Kernel, g: ConvGeometry, tol: f32) {
        let dev = Device::Cpu;
        let (b, c, h, w, out) = (2, 5, 9, 11, 7);
        let (kh, kw) = g.kernel;
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.3, (out, c, kh, kw), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
        let extra = Tensor::randn(0f32, 1.0, (b, out), &dev).unwrap();
        let conv = PackedConv2d::from_f32(
            &wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            out,
            c,
            g,
            Some(bias.to_vec1::<f32>().unwrap()),
            kernel,
        )
        .unwrap();
        let plain = reference(&x, &wt, &bias, g);
        let want = plain
            .broadcast_add(&extra.reshape((b, out, 1, 1)).unwrap())
            .unwrap()
            .silu()
            .unwrap();
        let residual = Tensor::randn(0f32, 1.0, want.dims(), &dev).unwrap();
        let want = (want + &residual).unwrap();
        let nhwc = |t: &Tensor| t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        let got = conv
            .forward(
                &nhwc(&x),
                Some(&extra.flatten_all().unwrap().to_vec1::<f32>().unwrap()),
                Some(Activation::Silu),
                Some(&nhwc(&residual)),
            )
            .unwrap();
        let d = max_diff(&got, &nhwc(&want));
        assert!(d < tol, "{kernel:?} {g:?}: max |Δ| {d}");
        let got = conv.forward(&nhwc(&x), None, None, None).unwrap();
        let d = max_diff(&got, &nhwc(&plain));
        assert!(d < tol, "{kernel:?} {g:?} plain: max |Δ| {d}");
    }

    #[test]
    fn convolutions_match_candle_on_every_kernel_here() {
        let shapes = [
            ConvGeometry::square(3, 1, 1),
            ConvGeometry::square(3, 2, 1),
            ConvGeometry::square(1, 1, 0),
            // Diffusers' VAE downsampler: pad right and bottom, stride 2.
            ConvGeometry {
                kernel: (3, 3),
                stride: 2,
                padding: [0, 1, 0, 1],
            },
        ];
        for kernel in Kernel::ALL {
            if !kernel.runs_here() {
                eprintln!("{}", kernel.skip_line());
                continue;
            }
            let tol = match kernel.precision() {
                crate::Precision::F32 => 1e-4,
                _ => 0.15,
            };
            for g in shapes {
                check(kernel, g, tol);
            }
        }
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let Some(kernel) = Kernel::ALL.into_iter().find(|k| k.runs_here()) else {
            eprintln!("skipped: this CPU runs none of the kernels");
            return;
        };
        let g = ConvGeometry::square(3, 1, 0);
        let conv = PackedConv2d::from_f32(&[0.0; 2 * 3 * 9], 2, 3, g, None, kernel).unwrap();
        let dev = Device::Cpu;
        let small = Tensor::zeros((1, 2, 2, 3), DType::F32, &dev).unwrap();
        let err = conv.forward(&small, None, None, None).unwrap_err();
        assert!(err.to_string().contains("smaller than"), "{err}");
        let wrong = Tensor::zeros((1, 4, 4, 5), DType::F32, &dev).unwrap();
        let err = conv.forward(&wrong, None, None, None).unwrap_err();
        assert!(err.to_string().contains("5 channels"), "{err}");
        assert!(PackedConv2d::from_f32(&[0.0; 5], 2, 3, g, None, kernel).is_err());
    }
}
