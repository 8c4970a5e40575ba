//! `altclip tokenize`: the token ids the text tower sees.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::common::{print_json_line, ModelArgs};

/// Print the token ids of each text, special tokens included, padding excluded,
/// truncated to --max-length: one `{"text":...,"ids":[...]}` per line.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  altclip tokenize -m BAAI/AltCLIP '一只在草地上的猫' 'a cat on the grass'"
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts to tokenize.
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let tokenizer = args.model.load_tokenizer()?;
    let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let mut out = std::io::stdout().lock();
    for (text, ids) in args.texts.iter().zip(tokenizer.encode(&refs)?) {
        print_json_line(&mut out, &json!({"text": text, "ids": ids}))?;
    }
    Ok(ExitCode::SUCCESS)
}
