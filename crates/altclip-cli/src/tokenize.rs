//! `altclip tokenize`: the token ids the text tower sees.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::common::{print_json_line, ModelArgs};

/// Print the token ids the model sees for each text.
///
/// One `{"text":...,"ids":[...]}` per line: `<s>` and `</s>` included,
/// padding excluded, truncated to --max-length. Reads only the tokenizer and
/// config.json, not the weights.
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

#[derive(Serialize)]
struct Line<'a> {
    text: &'a str,
    ids: Vec<u32>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let tokenizer = args.model.load_tokenizer()?;
    let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let mut out = std::io::stdout().lock();
    for (text, ids) in args.texts.iter().zip(tokenizer.encode(&refs)?) {
        print_json_line(&mut out, &Line { text, ids })?;
    }
    Ok(ExitCode::SUCCESS)
}
