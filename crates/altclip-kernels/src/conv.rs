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
        let mut out = Vec::<f32>::with_capacity(b * ho * wo * self.weight.n);
        let place = Placement {
            scale: 1,
            phase: (0, 0),
        };
        // SAFETY: `out` has room for the b·ho·wo·n outputs, which the call writes.
        unsafe {
            self.run_into(
                x,
                (b, h, w),
                (ho, wo),
                sample_bias,
                act,
                residual,
                OutPtr(out.as_mut_ptr()),
                place,
            );
            out.set_len(b * ho * wo * self.weight.n);
        }
        out
    }

    /// Writes every output pixel `(s, y, x)` through `out` at `place`.
    ///
    /// # Safety
    /// `out` must have room for `b · (ho·scale) · (wo·scale) · n` floats;
    /// concurrent calls must write disjoint phases.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_into(
        &self,
        x: &[f32],
        (b, h, w): (usize, usize, usize),
        (ho, wo): (usize, usize),
        sample_bias: Option<&[f32]>,
        act: Option<Activation>,
        residual: Option<&[f32]>,
        out_ptr: OutPtr,
        place: Placement,
    ) {
        let (n, c, k) = (self.weight.n, self.in_channels, self.weight.k);
        debug_assert!(place.scale == 1 || residual.is_none());
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
        if self.geometry.pointwise() && place.scale == 1 {
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
            // Interleaved outputs are `scale` pixels apart: one row per band.
            let band = match place.scale {
                1 => (BAND_ROWS / wo).clamp(1, ho),
                _ => 1,
            };
            let (dst_h, dst_w) = (ho * place.scale, wo * place.scale);
            let (py, px) = place.phase;
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
                        out_ptr
                            .get()
                            .add(((s * dst_h + y0 * place.scale + py) * dst_w + px) * n),
                        n * place.scale,
                        &fused(s, y0 * wo),
                        Threads::One,
                    )
                };
                COLUMNS.set(cols);
            });
        }
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

/// Where a convolution's output pixel `(s, y, x)` goes: pixel
/// `(y·scale + phase.0, x·scale + phase.1)` of an output `scale` times larger.
#[derive(Debug, Clone, Copy)]
struct Placement {
    scale: usize,
    phase: (usize, usize),
}

/// Nearest-neighbour 2× upsampling followed by a 3×3 convolution (padding
/// 1), computed on the input as four 2×2 convolutions, one per output phase.
///
/// After a nearest 2× upsampling, the 3×3 window of output pixel
/// `(2y + py, 2x + px)` covers only 2×2 distinct input pixels: rows
/// `y − 1, y` when `py = 0` (kernel rows 1 and 2 both read row `y`) and
/// `y, y + 1` when `py = 1`, and likewise for columns. Summing the kernel
/// taps that read the same pixel gives each phase a 2×2 kernel: 16 products
/// per input pixel instead of 36, and the upsampled input is never built.
#[derive(Debug)]
pub struct PackedUpsampleConv2d {
    /// Indexed `2·py + px`.
    phases: Vec<PackedConv2d>,
}

impl PackedUpsampleConv2d {
    /// From a PyTorch `[out, in, 3, 3]` weight (row-major f32) and a bias of `out`.
    pub fn from_f32(
        weight: &[f32],
        out_channels: usize,
        in_channels: usize,
        bias: Option<Vec<f32>>,
        kernel: Kernel,
    ) -> Result<Self> {
        if out_channels
            .checked_mul(in_channels)
            .and_then(|v| v.checked_mul(9))
            != Some(weight.len())
        {
            return Err(Error::Unsupported {
                op: "packed upsample conv2d",
                reason: format!(
                    "a [{out_channels}, {in_channels}, 3, 3] weight cannot hold {} values",
                    weight.len()
                ),
            });
        }
        // Which 3×3 taps fall on each of the two input rows (or columns) a phase reads.
        const TAPS: [[&[usize]; 2]; 2] = [[&[0], &[1, 2]], [&[0, 1], &[2]]];
        let mut phases = Vec::with_capacity(4);
        for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let mut w2 = vec![0f32; out_channels * in_channels * 4];
            for oc in 0..out_channels * in_channels {
                let w3 = &weight[oc * 9..][..9];
                for (a, rows) in TAPS[py].iter().enumerate() {
                    for (bb, cols) in TAPS[px].iter().enumerate() {
                        w2[oc * 4 + a * 2 + bb] = rows
                            .iter()
                            .flat_map(|&r| cols.iter().map(move |&c| w3[r * 3 + c]))
                            .sum();
                    }
                }
            }
            let geometry = ConvGeometry {
                kernel: (2, 2),
                stride: 1,
                padding: [1 - py, py, 1 - px, px],
            };
            phases.push(PackedConv2d::from_f32(
                &w2,
                out_channels,
                in_channels,
                geometry,
                bias.clone(),
                kernel,
            )?);
        }
        Ok(Self { phases })
    }

    /// The kernel the weights are packed for.
    pub fn kernel(&self) -> Kernel {
        self.phases[0].kernel()
    }

    /// `conv3x3(upsample2x(x))` for `x` `[B, H, W, in]` (contiguous f32 on
    /// the CPU): `[B, 2H, 2W, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let first = &self.phases[0];
        if c != first.in_channels || h == 0 || w == 0 {
            return Err(Error::Unsupported {
                op: "packed upsample conv2d",
                reason: format!(
                    "input {:?} for a weight taking {} channels",
                    x.dims(),
                    first.in_channels
                ),
            });
        }
        let n = first.out_channels();
        let x = x.contiguous()?;
        let len = b * 4 * h * w * n;
        let mut out = Vec::<f32>::with_capacity(len);
        let out_ptr = OutPtr(out.as_mut_ptr());
        with_contiguous(&x, "packed upsample conv2d", "input", |xs| {
            for (i, conv) in self.phases.iter().enumerate() {
                let place = Placement {
                    scale: 2,
                    phase: (i / 2, i % 2),
                };
                // SAFETY: `out` holds b·2h·2w·n floats; each phase writes its
                // quarter of the pixels, and the four together write all.
                unsafe { conv.run_into(xs, (b, h, w), (h, w), None, None, None, out_ptr, place) };
            }
        })?;
        // SAFETY: the four phases wrote every output (above).
        unsafe { out.set_len(len) };
        Ok(Tensor::from_vec(out, (b, 2 * h, 2 * w, n), x.device())?)
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
    fn upsampling_convolutions_match_upsample_then_convolve() {
        let dev = Device::Cpu;
        let (b, c, h, w, out) = (2, 5, 6, 7, 9);
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.3, (out, c, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
        let up = x.upsample_nearest2d(2 * h, 2 * w).unwrap();
        let want = reference(&up, &wt, &bias, ConvGeometry::square(3, 1, 1));
        let nhwc = |t: &Tensor| t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        for kernel in Kernel::ALL {
            if !kernel.runs_here() {
                eprintln!("{}", kernel.skip_line());
                continue;
            }
            let tol = match kernel.precision() {
                crate::Precision::F32 => 1e-4,
                _ => 0.15,
            };
            let conv = PackedUpsampleConv2d::from_f32(
                &wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                out,
                c,
                Some(bias.to_vec1::<f32>().unwrap()),
                kernel,
            )
            .unwrap();
            let got = conv.forward(&nhwc(&x)).unwrap();
            let d = max_diff(&got, &nhwc(&want));
            assert!(d < tol, "{kernel:?}: max |Δ| {d}");
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
