//! The model flags every binary shares, for `clap` users (feature `clap`):
//! `--revision`, `--dtype` and `--max-length`, each also read from its
//! `ALTCLIP_*` environment variable. `--model` stays with each binary, as
//! whether it is required differs.

use candle_core::DType;

use crate::model::LoadOptions;
use crate::tokenize::DEFAULT_MAX_LENGTH;

/// Compute precision, as `--dtype` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    /// 32-bit float: exact parity with transformers (AVX-512 kernels where the CPU has them).
    F32,
    /// 16-bit float (candle's kernels; slow on CPUs).
    F16,
    /// bfloat16: on CPUs with AVX512-BF16 the matmuls run in bf16 with f32 sums and everything
    /// else in f32, like PyTorch's autocast (about 2x f32, cosine to f32 >= 0.999); elsewhere
    /// candle's bf16.
    Bf16,
    /// int8 linear layers (weights per output channel, activations per row, i32 sums) on CPUs
    /// with AVX512-VNNI, everything else in f32; elsewhere the f32 kernels. Check the accuracy
    /// on your data with `altclip eval`.
    Int8,
}

impl Dtype {
    /// The candle dtype of the activations.
    pub fn dtype(self) -> DType {
        match self {
            Dtype::F32 | Dtype::Int8 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::Bf16 => DType::BF16,
        }
    }

    /// The flag value, e.g. `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Int8 => "int8",
        }
    }
}

/// How to run a model, whichever it is.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelSettings {
    /// Hub revision (branch, tag or commit) when --model is a Hub id.
    #[arg(long, env = "ALTCLIP_REVISION")]
    pub revision: Option<String>,
    /// Compute dtype.
    #[arg(long, value_enum, default_value = "f32", env = "ALTCLIP_DTYPE")]
    pub dtype: Dtype,
    /// Truncate texts to this many tokens, <s> and </s> included (FlagAI uses 77; at most 512).
    #[arg(long, default_value_t = DEFAULT_MAX_LENGTH, env = "ALTCLIP_MAX_LENGTH")]
    pub max_length: usize,
}

impl ModelSettings {
    /// The engine's load options for these flags (on the CPU).
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            dtype: self.dtype.dtype(),
            int8: self.dtype == Dtype::Int8,
            revision: self.revision.clone(),
            max_length: self.max_length,
            ..LoadOptions::default()
        }
    }
}
