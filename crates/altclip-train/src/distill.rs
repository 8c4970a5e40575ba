//! Phase 1, teacher learning: MSE between the student's
//! `transformation(pre_LN(h))[:, 0]` and CLIP's pooled text embedding of the
//! English side, for the English→English and translated→English pairs.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::clip_text::ClipText;
use crate::data::ParallelPair;
use crate::student::Student;
use crate::trainer::Objective;
use altclip::cache::files_key;
use altclip::error::{Error, Result};
use altclip::text::TextInputs;
use altclip_eval::metrics::retrieval_metrics;

/// Which student inputs each pair contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairMode {
    /// The English sentence and its translation (the paper's EN-EN + EN-CN).
    Both,
    /// Only the translation.
    TranslatedOnly,
}

/// Tokenised pairs and their teacher targets.
pub struct DistillSet {
    en_ids: Vec<Vec<u32>>,
    other_ids: Vec<Vec<u32>>,
    /// `[pairs, teacher hidden]`.
    targets: Tensor,
}

impl DistillSet {
    /// Tokenises `pairs` with the student's tokenizer; `targets` holds one
    /// teacher embedding per pair.
    pub fn new(student: &Student, pairs: &[ParallelPair], targets: Tensor) -> Result<Self> {
        let (n, d) = targets.dims2()?;
        if n != pairs.len() || d != student.text_config.project_dim {
            return Err(Error::Invalid(format!(
                "teacher targets are [{n}, {d}] for {} pairs and a student of width {}",
                pairs.len(),
                student.text_config.project_dim
            )));
        }
        let en: Vec<&str> = pairs.iter().map(|p| p.en.as_str()).collect();
        let other: Vec<&str> = pairs.iter().map(|p| p.other.as_str()).collect();
        Ok(Self {
            en_ids: student.tokenizer.encode(&en)?,
            other_ids: student.tokenizer.encode(&other)?,
            targets,
        })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.en_ids.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.en_ids.is_empty()
    }

    fn inputs(&self, student: &Student, ids: &[&Vec<u32>]) -> Result<TextInputs> {
        let ids: Vec<Vec<u32>> = ids.iter().map(|v| (*v).clone()).collect();
        TextInputs::new(&ids, student.tokenizer.pad_id(), &student.device)
    }

    fn targets_of(&self, rows: &[usize]) -> Result<Tensor> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let n = idx.len();
        Ok(self
            .targets
            .index_select(&Tensor::from_vec(idx, n, self.targets.device())?, 0)?)
    }
}

/// The distillation objective, with optional held-out pairs.
pub struct DistillObjective {
    pub train: DistillSet,
    pub dev: Option<DistillSet>,
    pub mode: PairMode,
    /// Pairs per forward pass during evaluation.
    pub eval_batch_size: usize,
}

impl Objective for DistillObjective {
    fn len(&self) -> usize {
        self.train.len()
    }

    /// Student inputs are the batch's English sentences then their
    /// translations (`Both`), each targeting the teacher's embedding of the
    /// English side; `MSELoss` with mean reduction.
    fn loss(&self, student: &Student, batch: &[usize]) -> Result<Tensor> {
        let set = &self.train;
        let mut ids: Vec<&Vec<u32>> = Vec::with_capacity(2 * batch.len());
        let mut rows = Vec::with_capacity(2 * batch.len());
        if self.mode == PairMode::Both {
            ids.extend(batch.iter().map(|&i| &set.en_ids[i]));
            rows.extend_from_slice(batch);
        }
        ids.extend(batch.iter().map(|&i| &set.other_ids[i]));
        rows.extend_from_slice(batch);
        let out = student.pooled(&set.inputs(student, &ids)?)?;
        let target = set.targets_of(&rows)?;
        Ok((out - target)?.sqr()?.mean_all()?)
    }

    /// On the dev pairs: `mse_en` (English→English), `mse_translated`, the
    /// mean cosine between the student's embeddings of a sentence and of its
    /// translation, the mean cosine between the student's embedding of the
    /// translation and the teacher's of the English, and translation
    /// retrieval among the dev pairs
    /// (translation → English sentence, CLIP_benchmark's recalls).
    fn evaluate(&self, student: &Student) -> Result<Option<serde_json::Value>> {
        let Some(dev) = &self.dev else {
            return Ok(None);
        };
        let embed = |ids: &[Vec<u32>]| -> Result<Tensor> {
            let mut parts = Vec::new();
            for chunk in ids.chunks(self.eval_batch_size.max(1)) {
                let refs: Vec<&Vec<u32>> = chunk.iter().collect();
                parts.push(student.pooled(&dev.inputs(student, &refs)?)?.detach());
            }
            Ok(Tensor::cat(&parts, 0)?)
        };
        let en = embed(&dev.en_ids)?;
        let other = embed(&dev.other_ids)?;
        let mse = |a: &Tensor| -> Result<f64> {
            Ok((a - &dev.targets)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
        };
        let (en_rows, other_rows): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            (en.to_vec2()?, other.to_vec2()?);
        let cosine_pairs = en_rows
            .iter()
            .zip(&other_rows)
            .map(|(a, b)| cosine(a, b))
            .sum::<f64>()
            / en_rows.len().max(1) as f64;
        let target_rows: Vec<Vec<f32>> = dev.targets.to_vec2()?;
        let cosine_teacher = other_rows
            .iter()
            .zip(&target_rows)
            .map(|(a, b)| cosine(a, b))
            .sum::<f64>()
            / other_rows.len().max(1) as f64;
        let identity: Vec<usize> = (0..dev.len()).collect();
        let recalls = retrieval_metrics(&other_rows, &en_rows, &identity, &[1, 5]);
        let mut metrics = serde_json::json!({
            "mse_en": mse(&en)?,
            "mse_translated": mse(&other)?,
            "cosine_en_translated": cosine_pairs,
            "cosine_translated_teacher": cosine_teacher,
        });
        for (name, value) in recalls {
            let name = name
                .replace("image_retrieval", "translation_to_en")
                .replace("text_retrieval", "en_to_translation");
            metrics[name] = value.into();
        }
        Ok(Some(metrics))
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// Teacher embeddings, computed once per teacher and sentence list and kept
/// in `cache_dir` as `teacher-<key>.safetensors`.
pub struct TeacherCache {
    dir: PathBuf,
}

impl TeacherCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The file that holds (or will hold) the targets of `sentences`.
    pub fn path_for(&self, teacher: &ClipText, sentences: &[String]) -> Result<PathBuf> {
        let mut extra = format!("max_length={}\n", teacher.tokenizer.max_length());
        for s in sentences {
            extra.push_str(s);
            extra.push('\n');
        }
        let key = files_key(
            &teacher.dir,
            &["config.json", "tokenizer.json", "vocab.json", "merges.txt"],
            &teacher.weight_files,
            &extra,
        )?;
        Ok(self.dir.join(format!("teacher-{key}.safetensors")))
    }

    /// `[sentences, hidden]`: the teacher's `pooler_output` per sentence,
    /// from the cache or computed in batches of `batch_size` (then cached).
    /// `on_batch(done, total)` reports progress while computing.
    pub fn targets(
        &self,
        teacher: &ClipText,
        sentences: &[String],
        batch_size: usize,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<(Tensor, bool)> {
        let path = self.path_for(teacher, sentences)?;
        if let Ok(mut cached) = candle_core::safetensors::load(&path, &teacher.device) {
            if let Some(t) = cached.remove("targets") {
                if t.dims().first() == Some(&sentences.len()) {
                    return Ok((t, true));
                }
            }
        }
        let mut rows = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(batch_size.max(1)) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            rows.push(
                teacher
                    .model
                    .forward(&teacher.inputs(&refs)?)?
                    .pooler_output,
            );
            on_batch(rows.len() * batch_size.max(1), sentences.len());
        }
        let targets = Tensor::cat(&rows, 0)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("targets".to_string(), targets.clone())]),
            &tmp,
        )?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok((targets, false))
    }
}

/// Maps each pair to its row in a de-duplicated list of English sentences.
pub fn unique_english(pairs: &[ParallelPair]) -> (Vec<String>, Vec<usize>) {
    let mut index = std::collections::HashMap::new();
    let mut unique = Vec::new();
    let rows = pairs
        .iter()
        .map(|p| {
            *index.entry(p.en.clone()).or_insert_with(|| {
                unique.push(p.en.clone());
                unique.len() - 1
            })
        })
        .collect();
    (unique, rows)
}

/// Teacher targets per pair: the cached embedding of each pair's English side.
pub fn pair_targets(
    cache: &TeacherCache,
    teacher: &ClipText,
    pairs: &[ParallelPair],
    batch_size: usize,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<(Tensor, bool)> {
    let (unique, rows) = unique_english(pairs);
    let (targets, cached) = cache.targets(teacher, &unique, batch_size, on_batch)?;
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let n = idx.len();
    let device: &Device = targets.device();
    Ok((
        targets.index_select(&Tensor::from_vec(idx, n, device)?, 0)?,
        cached,
    ))
}
