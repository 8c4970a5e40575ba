//! `altclip`: bilingual (Chinese/English) CLIP embeddings, tokenization and
//! similarity from the command line, with outputs identical to transformers'.

mod bench;
mod classify;
mod common;
mod embed;
mod embed_dataset;
mod eval;
mod generate;
mod info;
mod library;
mod serve;
mod similarity;
mod tokenize;
mod train;

use clap::{Parser, Subcommand};

// Inference allocates and frees many large temporaries per layer; glibc's
// malloc returns them to the kernel each time and pays page faults on every
// reuse, which costs about a third of the run time. mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "altclip",
    version,
    about = "AltCLIP: bilingual Chinese/English CLIP embeddings on the CPU, matching transformers",
    long_about = "AltCLIP (BAAI) maps Chinese or English text and images into one embedding space.\n\
                  --model takes a local Hugging Face model directory or a Hub id such as BAAI/AltCLIP \
                  (read from the Hugging Face cache, downloaded when online).\n\n\
                  Examples:\n  \
                  altclip embed --model BAAI/AltCLIP --image cat.jpg --text 一只猫 --text 'a dog'\n  \
                  altclip similarity --model BAAI/AltCLIP --image cat.jpg --text 一张猫的照片 --text 一张狗的照片\n  \
                  altclip tokenize --model BAAI/AltCLIP '一只在草地上的猫'\n  \
                  altclip info --model BAAI/AltCLIP"
)]
struct Cli {
    /// Worker threads for the model (default: RAYON_NUM_THREADS if set, else one per physical core).
    #[arg(long, global = true, env = "ALTCLIP_THREADS", value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Embed(embed::Args),
    Similarity(similarity::Args),
    Classify(classify::Args),
    /// Benchmarks with CLIP_benchmark's metrics: zero-shot classification and retrieval.
    #[command(subcommand)]
    Eval(eval::Command),
    EmbedDataset(embed_dataset::Args),
    Generate(generate::Args),
    Index(library::IndexArgs),
    Search(library::SearchArgs),
    Dedup(library::DedupArgs),
    Serve(altclip_server::ServeArgs),
    Bench(bench::Args),
    Tokenize(tokenize::Args),
    Info(info::Args),
    /// Train the text tower: parallel-text distillation, then contrastive learning.
    #[command(subcommand)]
    Train(train::Command),
}

fn main() -> std::process::ExitCode {
    // Like any Unix filter, end quietly when the reader of stdout goes away
    // (`altclip info | head`): Rust ignores SIGPIPE, so every print would
    // otherwise panic with "Broken pipe".
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let threads = altclip_kernels::init_threads(cli.threads.map(|n| n as usize));
    tracing::debug!("{threads} worker threads");
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Similarity(args) => similarity::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Eval(command) => eval::run(command),
        Command::EmbedDataset(args) => embed_dataset::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Index(args) => library::index(args),
        Command::Search(args) => library::search(args),
        Command::Dedup(args) => library::dedup(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Info(args) => info::run(args),
        Command::Train(command) => train::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
