//! Branch-free scalar math that the compiler vectorises inside the GEMM
//! epilogue, so bias + activation + residual cost one pass over a tile that is
//! still in L1 instead of separate passes over the whole activation.

// The polynomial coefficients are kept as published.
#![allow(clippy::excessive_precision)]

/// The activations the GEMM epilogue fuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` with erf.
    GeluErf,
    /// The tanh approximation of GELU.
    GeluTanh,
    /// `x·sigmoid(1.702x)`, OpenAI CLIP's activation.
    QuickGelu,
    Relu,
    /// `x·sigmoid(x)`.
    Silu,
}

/// `exp(x)` to about 1 ulp (Cephes `expf`), inputs clamped to the finite range.
/// Integer conversions go through the bits of `x + 1.5·2²³` rather than
/// `as i32`, whose saturating semantics would keep the loop scalar.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
                                     // Not `clamp`: its NaN and ordering checks keep the loop scalar.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.3).min(88.7);
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    // The low mantissa bits of `shifted` hold n; 2^n is n + 127 in the exponent.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(0x4b40_0000);
    y * f32::from_bits((n_int.wrapping_add(127) as u32) << 23)
}

/// `erfc(|z|)` with fractional error below 1.2e-7 (Numerical Recipes' Chebyshev fit).
#[inline(always)]
fn erfc_abs(z: f32) -> f32 {
    let z = z.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_204;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_7;
    p = p * t - 1.265_512_2;
    t * exp(-z * z + p)
}

/// PyTorch's exact GELU, `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    let tail = erfc_abs(x * std::f32::consts::FRAC_1_SQRT_2);
    // erf(x/√2) = 1 - erfc for x ≥ 0, erfc - 1 below.
    let one_plus_erf = if x >= 0.0 { 2.0 - tail } else { tail };
    0.5 * x * one_plus_erf
}

/// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    let y = C * (x + 0.044_715 * x * x * x);
    let tanh = 1.0 - 2.0 / (1.0 + exp(2.0 * y));
    0.5 * x * (1.0 + tanh)
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Applies `act` to every element; the loops are what the compiler vectorises.
#[inline(always)]
pub fn activate_slice(act: Activation, v: &mut [f32]) {
    match act {
        Activation::GeluErf => v.iter_mut().for_each(|x| *x = gelu_erf(*x)),
        Activation::GeluTanh => v.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
        Activation::QuickGelu => v.iter_mut().for_each(|x| *x *= sigmoid(1.702 * *x)),
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Silu => v.iter_mut().for_each(|x| *x *= sigmoid(*x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // Abramowitz & Stegun 7.1.28 is too coarse; integrate instead.
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_matches_std() {
        for i in -870..=880 {
            let x = i as f32 * 0.1 + 0.013;
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn activations_match_their_definitions() {
        for i in -120..=120 {
            let x = i as f32 * 0.05;
            let xd = x as f64;
            let erf = gelu_erf(x) as f64;
            let want = 0.5 * xd * (1.0 + erf_ref(xd / std::f64::consts::SQRT_2));
            assert!((erf - want).abs() < 2e-7 * (1.0 + want.abs()), "gelu({x})");
            let tanh = gelu_tanh(x) as f64;
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let want = 0.5 * xd * (1.0 + (c * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!(
                (tanh - want).abs() < 3e-7 * (1.0 + want.abs()),
                "gelu_tanh({x})"
            );
            let quick = {
                let mut v = [x];
                activate_slice(Activation::QuickGelu, &mut v);
                v[0] as f64
            };
            let want = xd / (1.0 + (-1.702 * xd).exp());
            assert!(
                (quick - want).abs() < 3e-7 * (1.0 + want.abs()),
                "quick_gelu({x})"
            );
        }
        assert!(gelu_erf(-30.0).abs() < 1e-30);
        assert_eq!(gelu_erf(30.0), 30.0);
    }
}
