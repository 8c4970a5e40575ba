//! `altclip train distill` and `altclip train contrastive`: AltCLIP's two
//! training phases (parallel-text distillation, then contrastive learning).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use altclip::cache::{default_root, model_key, EmbeddingCache};
use altclip::hub;
use altclip::{AltClip, Device, LoadOptions};
use altclip_train::clip_text::ClipText;
use altclip_train::contrastive::{CaptionSet, ContrastiveObjective};
use altclip_train::data::{read_image_captions, read_parallel_tsv, ImageCaption};
use altclip_train::distill::{pair_targets, DistillObjective, DistillSet, PairMode, TeacherCache};
use altclip_train::export::{export_altclip, ExportPlan};
use altclip_train::optim::AdamWConfig;
use altclip_train::schedule::Decay;
use altclip_train::{Event, Objective, Student, StudentOptions, TrainConfig, Trainer};
use anyhow::{Context, Result};

use crate::common::{image_features, ImageArgs};

/// Train AltCLIP's text tower: `distill` (phase 1), then `contrastive` (phase 2).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    Distill(DistillArgs),
    Contrastive(ContrastiveArgs),
}

/// Learning-rate decay after the warm-up.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

/// Settings both phases share.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Output directory: the trained model in Hugging Face layout, plus
    /// train_log.jsonl, checkpoints/ and cache/.
    #[arg(long)]
    out: PathBuf,
    /// Examples per optimizer step (the effective batch; the paper uses 1024).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Split each batch into this many micro-batches whose gradients are summed.
    #[arg(long, default_value_t = 1)]
    grad_accumulation: usize,
    /// Passes over the data.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Stop after this many optimizer steps instead (the data is cycled as needed).
    #[arg(long)]
    steps: Option<u64>,
    /// Learning-rate decay after the warm-up.
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: Schedule,
    /// AdamW β1.
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    /// AdamW β2.
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    /// AdamW ε.
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// Seed of the data order (and of a fresh student head).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a checkpoint (weights + optimizer state) every N steps.
    #[arg(long)]
    save_every: Option<u64>,
    /// Keep this many newest checkpoints.
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Evaluate on --eval-data every N steps (and always at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Continue from the newest checkpoint in --out (same data and settings).
    #[arg(long)]
    resume: bool,
    /// Truncate student texts to this many tokens, <s> and </s> included.
    #[arg(long, default_value_t = 77)]
    max_length: usize,
    /// Texts per forward pass when embedding teacher targets or evaluating.
    #[arg(long, default_value_t = 64)]
    inference_batch_size: usize,
}

/// Phase 1: distil CLIP's text encoder into a multilingual student.
///
/// DATA holds `english<TAB>translation` lines. The loss is the MSE between the
/// student's transformation(pre_LN(h))[:,0] and the teacher's pooled embedding
/// (EOS token after final_layer_norm, before text_projection) of the English
/// side, for both the English and the translated input. Teacher embeddings are
/// computed once and cached in OUT/cache. A plain XLM-R student gets new
/// pre_LN and transformation layers. The output takes the image tower,
/// visual_projection, text_projection and logit_scale from the teacher when
/// it is a full CLIP model, else from an AltCLIP student.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  \
    altclip train distill --teacher openai/clip-vit-large-patch14 \
    --student FacebookAI/xlm-roberta-large --data parallel.tsv --eval-data dev.tsv --out altclip-t\n\n\
    Paper settings (Table 6): --batch-size 1024 --lr 1e-4 --weight-decay 0.1 --warmup-steps 500 \
    --epochs 10 --clip-grad-norm 1.0")]
pub struct DistillArgs {
    /// CLIP checkpoint (directory or Hub id) whose text encoder is the teacher.
    #[arg(long)]
    teacher: String,
    /// AltCLIP or plain XLM-R checkpoint (directory or Hub id) to start from.
    #[arg(long)]
    student: String,
    /// Parallel text, one `english<TAB>translation` per line.
    #[arg(long)]
    data: PathBuf,
    /// Held-out parallel text for evaluation (same format).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Which student inputs each pair gives: both sides (EN→EN and translated→EN), or the translation only.
    #[arg(long, value_enum, default_value = "both")]
    pairs: Pairs,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Decoupled weight decay (matrices only).
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 500)]
    warmup_steps: u64,
    /// Clip gradients to this global L2 norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    clip_grad_norm: f64,
    #[command(flatten)]
    common: CommonArgs,
}

/// Which student inputs a parallel pair gives.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Pairs {
    Both,
    Translated,
}

/// Phase 2: contrastive learning on image–text pairs with a frozen image tower.
///
/// DATA is a TSV of `image<TAB>caption` lines (paths relative to the file) or a
/// directory of images with a NAME.txt caption file (one caption per line)
/// beside each NAME.jpg; Chinese and English captions may be mixed. Image
/// features are computed once and cached (as `altclip eval` does), so each
/// step costs only the text tower. The loss is symmetric InfoNCE with the
/// model's (frozen) logit scale; the text tower and text_projection are trained.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  \
    altclip train contrastive --model altclip-t --data pairs.tsv --eval-data dev.tsv --out altclip\n\n\
    Paper settings (Table 6): --batch-size 1024 --lr 2e-6 --weight-decay 0.05 --warmup-steps 2000 \
    --epochs 1 --clip-grad-norm 5.0")]
pub struct ContrastiveArgs {
    /// AltCLIP checkpoint (directory or Hub id) to fine-tune.
    #[arg(long, short = 'm')]
    model: String,
    /// Image–caption pairs: a TSV file or a directory (see above).
    #[arg(long)]
    data: PathBuf,
    /// Held-out pairs for retrieval evaluation (same formats).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-6)]
    lr: f64,
    /// Decoupled weight decay (matrices only).
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 2000)]
    warmup_steps: u64,
    /// Clip gradients to this global L2 norm (0 disables).
    #[arg(long, default_value_t = 5.0)]
    clip_grad_norm: f64,
    /// Image-feature cache (default: ~/.cache/altclip).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the image-feature cache.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Distill(args) => distill(args),
        Command::Contrastive(args) => contrastive(args),
    }
}

fn resolve(model: &str, flag: &str) -> Result<PathBuf> {
    Ok(hub::resolve(model, None)
        .with_context(|| format!("{flag} {model}"))?
        .dir)
}

/// The run's settings; `data` is the training data file, whose content hash a
/// resumed run must match.
fn train_config(
    c: &CommonArgs,
    data: &std::path::Path,
    lr: f64,
    weight_decay: f64,
    warmup: u64,
    clip: f64,
) -> Result<TrainConfig> {
    Ok(TrainConfig {
        batch_size: c.batch_size,
        grad_accumulation: c.grad_accumulation,
        epochs: c.epochs,
        max_steps: c.steps,
        lr,
        warmup_steps: warmup,
        decay: match c.schedule {
            Schedule::Cosine => Decay::Cosine,
            Schedule::Linear => Decay::Linear,
            Schedule::Constant => Decay::Constant,
        },
        optimizer: AdamWConfig {
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay,
        },
        clip_grad_norm: (clip > 0.0).then_some(clip),
        seed: c.seed,
        save_every: c.save_every,
        eval_every: c.eval_every,
        keep_checkpoints: c.keep_checkpoints,
        data: data_digest(data)?,
    })
}

/// The content hash of a training data file, which a resumed run must match.
fn data_digest(path: &std::path::Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading --data {}", path.display()))?;
    Ok(altclip::cache::content_hash(&bytes))
}

fn set_max_length(student: &mut Student, max_length: usize) -> Result<()> {
    let t = &student.text_config;
    let limit = t.max_position_embeddings - t.pad_token_id as usize - 1;
    anyhow::ensure!(
        max_length <= limit,
        "--max-length {max_length} exceeds the {limit} tokens the student's position table allows"
    );
    student.tokenizer.set_max_length(max_length)?;
    Ok(())
}

fn distill(args: DistillArgs) -> Result<ExitCode> {
    let c = &args.common;
    let device = Device::Cpu;
    let teacher_dir = resolve(&args.teacher, "--teacher")?;
    let student_dir = resolve(&args.student, "--student")?;
    let pairs = read_parallel_tsv(&args.data).context("reading --data")?;
    let dev = args
        .eval_data
        .as_deref()
        .map(read_parallel_tsv)
        .transpose()
        .context("reading --eval-data")?;

    let teacher = ClipText::load(&teacher_dir, &device)
        .with_context(|| format!("loading the teacher from {}", teacher_dir.display()))?;
    let hidden = teacher.config.text_config.hidden_size;
    let mut student = Student::load(
        &student_dir,
        &StudentOptions {
            project_dim: Some(hidden),
            with_text_projection: false,
            seed: c.seed,
        },
        &device,
    )
    .with_context(|| format!("loading the student from {}", student_dir.display()))?;
    set_max_length(&mut student, c.max_length)?;
    // Fail now, not after training, if no AltCLIP model can be assembled.
    let plan = ExportPlan::for_distill(&student, &teacher_dir)?;

    let cache = TeacherCache::new(&c.out.join("cache"));
    let embed_targets = |pairs: &[altclip_train::data::ParallelPair], what: &str| {
        let bar = progress_bar(0, &format!("teacher embeddings ({what})"));
        let result = pair_targets(
            &cache,
            &teacher,
            pairs,
            c.inference_batch_size,
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done.min(total) as u64);
            },
        );
        bar.finish_and_clear();
        let (targets, cached) = result?;
        eprintln!(
            "teacher embeddings of {} {what} pairs: {}",
            pairs.len(),
            if cached {
                "from the cache"
            } else {
                "computed and cached"
            }
        );
        anyhow::Ok(targets)
    };
    let targets = embed_targets(&pairs, "training")?;
    let dev_targets = dev.as_ref().map(|d| embed_targets(d, "dev")).transpose()?;
    drop(teacher);

    let objective = DistillObjective {
        train: DistillSet::new(&student, &pairs, targets)?,
        dev: match (&dev, dev_targets) {
            (Some(d), Some(t)) => Some(DistillSet::new(&student, d, t)?),
            _ => None,
        },
        mode: match args.pairs {
            Pairs::Both => PairMode::Both,
            Pairs::Translated => PairMode::TranslatedOnly,
        },
        eval_batch_size: c.inference_batch_size,
    };
    let config = train_config(
        c,
        &args.data,
        args.lr,
        args.weight_decay,
        args.warmup_steps,
        args.clip_grad_norm,
    )?;
    train_and_export(&student, &objective, config, c, &plan)
}

fn contrastive(args: ContrastiveArgs) -> Result<ExitCode> {
    let c = &args.common;
    let device = Device::Cpu;
    let model_dir = resolve(&args.model, "--model")?;
    let train_pairs = read_image_captions(&args.data).context("reading --data")?;
    let dev_pairs = args
        .eval_data
        .as_deref()
        .map(read_image_captions)
        .transpose()
        .context("reading --eval-data")?;

    let clip = AltClip::load(
        model_dir.to_str().unwrap_or_default(),
        &LoadOptions::default(),
    )
    .with_context(|| format!("loading {}", model_dir.display()))?;
    let cache = if args.no_cache {
        None
    } else {
        let root = args.cache_dir.clone().unwrap_or_else(default_root);
        Some(
            EmbeddingCache::open(&root, &model_key(&clip)?).with_context(|| {
                format!("opening the image-feature cache under {}", root.display())
            })?,
        )
    };
    let embed = |pairs: Vec<ImageCaption>, what: &str| -> Result<Captions> {
        embed_images(&clip, pairs, args.images.max_pixels, cache.as_ref(), what)
    };
    let train = embed(train_pairs, "training")?;
    let dev = dev_pairs.map(|p| embed(p, "dev")).transpose()?;
    let scale = (clip.logit_scale() as f64).exp();
    drop(clip);

    let mut student = Student::load(
        &model_dir,
        &StudentOptions {
            project_dim: None,
            with_text_projection: true,
            seed: c.seed,
        },
        &device,
    )
    .with_context(|| format!("loading the text tower of {}", model_dir.display()))?;
    set_max_length(&mut student, c.max_length)?;
    let plan = ExportPlan::for_contrastive(&student)?;
    let objective = ContrastiveObjective {
        train: CaptionSet::new(&student, &train.captions, train.image_of, &train.features)?,
        dev: dev
            .map(|d| CaptionSet::new(&student, &d.captions, d.image_of, &d.features))
            .transpose()?,
        scale,
        eval_batch_size: c.inference_batch_size,
    };
    let config = train_config(
        c,
        &args.data,
        args.lr,
        args.weight_decay,
        args.warmup_steps,
        args.clip_grad_norm,
    )?;
    train_and_export(&student, &objective, config, c, &plan)
}

/// Captions with the row of `features` each describes.
struct Captions {
    captions: Vec<String>,
    image_of: Vec<usize>,
    features: Vec<Vec<f32>>,
}

/// Image features of every distinct image (cached), in batches; pairs whose
/// image cannot be read are dropped with a warning.
fn embed_images(
    clip: &AltClip,
    pairs: Vec<ImageCaption>,
    max_pixels: u64,
    cache: Option<&EmbeddingCache>,
    what: &str,
) -> Result<Captions> {
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut images: Vec<PathBuf> = Vec::new();
    for p in &pairs {
        index.entry(p.image.clone()).or_insert_with(|| {
            images.push(p.image.clone());
            images.len() - 1
        });
    }
    let bar = progress_bar(images.len() as u64, &format!("image features ({what})"));
    let mut results = Vec::with_capacity(images.len());
    for chunk in images.chunks(32) {
        results.extend(image_features(clip, chunk, max_pixels, cache)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mut row_of: Vec<Option<usize>> = Vec::with_capacity(images.len());
    let mut features = Vec::new();
    for (path, result) in images.iter().zip(results) {
        match result {
            Ok(v) => {
                row_of.push(Some(features.len()));
                features.push(v);
            }
            Err(e) => {
                eprintln!("warning: skipping {}: {e}", path.display());
                row_of.push(None);
            }
        }
    }
    let mut captions = Vec::new();
    let mut image_of = Vec::new();
    for p in pairs {
        if let Some(row) = row_of[index[&p.image]] {
            captions.push(p.caption);
            image_of.push(row);
        }
    }
    anyhow::ensure!(
        !captions.is_empty(),
        "none of the {what} images could be read"
    );
    eprintln!(
        "{what}: {} captions of {} images",
        captions.len(),
        features.len()
    );
    Ok(Captions {
        captions,
        image_of,
        features,
    })
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// The trainer's refusals, with the flag that answers each.
fn advise(e: altclip_train::Error) -> anyhow::Error {
    match e {
        altclip_train::Error::CheckpointsExist(_) => anyhow::anyhow!(
            "{e}; pass --resume to continue that run, or choose another --out directory"
        ),
        altclip_train::Error::TooFewExamples { .. } => anyhow::anyhow!("{e}; lower --batch-size"),
        e => e.into(),
    }
}

fn train_and_export(
    student: &Student,
    objective: &dyn Objective,
    config: TrainConfig,
    c: &CommonArgs,
    plan: &ExportPlan,
) -> Result<ExitCode> {
    let mut trainer = Trainer::new(student, objective.len(), config, &c.out).map_err(advise)?;
    if c.resume {
        match trainer.resume()? {
            Some(step) => eprintln!("resuming from step {step}"),
            None => eprintln!(
                "no checkpoint in {}; starting from the beginning",
                c.out.join("checkpoints").display()
            ),
        }
    }
    let total = trainer.total_steps();
    eprintln!(
        "training {} trainable tensors on {} examples: {} steps of {} (log: {})",
        student.named_vars().len(),
        objective.len(),
        total,
        c.batch_size,
        c.out.join(altclip_train::trainer::LOG_FILE).display()
    );
    let bar = progress_bar(total, "training");
    bar.set_position(trainer.step());
    let mut last = None;
    let mut last_eval = None;
    let outcome = trainer.run(objective, &mut |event| {
        match event {
            Event::Step { log, .. } => {
                bar.set_position(log.step);
                bar.set_message(format!(
                    "loss {:.4} | lr {:.2e} | {:.1} samples/s",
                    log.loss, log.lr, log.samples_per_s
                ));
                last = Some(log.clone());
            }
            Event::Eval { step, metrics } => {
                bar.println(format!("step {step}: eval {metrics}"));
                last_eval = Some(metrics.clone());
            }
            Event::Checkpoint { path, .. } => {
                bar.println(format!("checkpoint {}", path.display()));
            }
        }
        true
    });
    outcome.map_err(advise)?;
    bar.finish_and_clear();
    export_altclip(&c.out, student, plan)
        .with_context(|| format!("writing the model to {}", c.out.display()))?;
    let summary = serde_json::json!({
        "out": c.out,
        "steps": trainer.step(),
        "last_step": last,
        "eval": last_eval,
    });
    println!("{summary}");
    eprintln!(
        "wrote the AltCLIP model to {} (config.json, model.safetensors, tokenizer, preprocessor)",
        c.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
