//! Zero-shot metrics with CLIP_benchmark's definitions. Rankings are by score,
//! descending, with ties going to the lower index (a stable sort), and a `k`
//! larger than the number of candidates means all of them.

use altclip::embedding::{normalize_rows, top_k};

/// `acc1`, `acc5` and `mean_per_class_recall` of a classification run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassificationMetrics {
    pub acc1: f64,
    /// `None` when there are fewer than 5 classes.
    pub acc5: Option<f64>,
    /// Balanced accuracy: mean recall over the classes present in the targets.
    pub mean_per_class_recall: f64,
}

/// Metrics for `logits[i]` (one row of class scores per sample) against `targets[i]`.
pub fn classification_metrics(logits: &[Vec<f32>], targets: &[usize]) -> ClassificationMetrics {
    assert_eq!(logits.len(), targets.len(), "one target per row of logits");
    let n = targets.len().max(1) as f64;
    let classes = logits.first().map_or(0, Vec::len);
    let hits_at = |k: usize| {
        logits
            .iter()
            .zip(targets)
            .filter(|(row, t)| top_k(row, k).contains(t))
            .count() as f64
            / n
    };
    let mut per_class: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for (row, &t) in logits.iter().zip(targets) {
        let entry = per_class.entry(t).or_default();
        entry.1 += 1;
        if top_k(row, 1).first() == Some(&t) {
            entry.0 += 1;
        }
    }
    let recall_sum: f64 = per_class
        .values()
        .map(|&(hit, all)| hit as f64 / all as f64)
        .sum();
    ClassificationMetrics {
        acc1: hits_at(1),
        acc5: (classes >= 5).then(|| hits_at(5)),
        mean_per_class_recall: recall_sum / per_class.len().max(1) as f64,
    }
}

fn normalized(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    normalize_rows(rows.to_vec())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum::<f64>() as f32
}

/// Text↔image retrieval recalls. `text_to_image[t]` is the image that caption
/// `t` describes; an image may have several captions. Returns, for each `k`
/// in CLIP_benchmark's order, `image_retrieval_recall@k` (text→image) and
/// `text_retrieval_recall@k` (image→text: a hit when any of the image's
/// captions is in the top k), then `mean_recall`, the mean of them all.
pub fn retrieval_metrics(
    text_embeddings: &[Vec<f32>],
    image_embeddings: &[Vec<f32>],
    text_to_image: &[usize],
    ks: &[usize],
) -> Vec<(String, f64)> {
    assert_eq!(
        text_embeddings.len(),
        text_to_image.len(),
        "one image per caption"
    );
    let texts = normalized(text_embeddings);
    let images = normalized(image_embeddings);
    let scores: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| images.iter().map(|i| dot(t, i)).collect())
        .collect();
    let mut out = Vec::new();
    for &k in ks {
        let hits = scores
            .iter()
            .zip(text_to_image)
            .filter(|(row, img)| top_k(row, k).contains(img))
            .count();
        out.push((
            format!("image_retrieval_recall@{k}"),
            hits as f64 / texts.len().max(1) as f64,
        ));
        let hits = (0..images.len())
            .filter(|&img| {
                let column: Vec<f32> = scores.iter().map(|row| row[img]).collect();
                top_k(&column, k).iter().any(|&t| text_to_image[t] == img)
            })
            .count();
        out.push((
            format!("text_retrieval_recall@{k}"),
            hits as f64 / images.len().max(1) as f64,
        ));
    }
    let mean = out.iter().map(|(_, v)| v).sum::<f64>() / out.len().max(1) as f64;
    out.push(("mean_recall".to_string(), mean));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_beyond_the_candidates_counts_everything() {
        let emb = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let m = retrieval_metrics(&emb, &emb, &[1, 0], &[1, 10]);
        assert_eq!(m[0], ("image_retrieval_recall@1".into(), 0.0));
        assert_eq!(m[2], ("image_retrieval_recall@10".into(), 1.0));
    }
}
