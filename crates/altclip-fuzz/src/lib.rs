//! Mutation fuzzing of every parser that hostile input reaches: image
//! decoding and preprocessing, the tokenizer, `config.json` and
//! `preprocessor_config.json`, safetensors and `.bin` weights, and the HTTP
//! server's request parsing for each inference route.
//!
//! It runs on stable Rust without instrumentation: seeds from `corpus/`,
//! mutated by [`mutate`], with panics, HTTP 500s and slow inputs as failures
//! (not coverage-guided; a sanitizer-free, in-process loop). A short bounded
//! run is part of `cargo test`; longer runs use the binary:
//!
//! ```text
//! cargo run -p altclip-fuzz --release -- --seconds 600
//! ```
//!
//! - [`mutate`]: the seedable PRNG and byte mutations.
//! - [`targets`]: the [`Target`]s and the [`Harness`] that feeds them.
//! - [`run`]: the campaign loop, and saving failing inputs.

pub mod mutate;
pub mod run;
pub mod targets;

pub use run::{fuzz, run_one, Failure, Stats};
pub use targets::{Harness, Target};
