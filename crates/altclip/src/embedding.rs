//! Working with embeddings: the one L2 normaliser, CLIP's softmax over
//! similarities, and rankings of scores.

use candle_core::{Device, Tensor, D};

use crate::error::Result;

/// Divides `row` by its L2 norm (summed in f64), in place. Every normalised
/// output of the engine goes through here.
pub fn normalize(row: &mut [f32]) {
    let norm = row
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    for v in row {
        *v = (*v as f64 / norm) as f32;
    }
}

/// [`normalize`] on every row.
pub fn normalize_rows(mut rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.iter_mut().for_each(|r| normalize(r));
    rows
}

/// The direction of `Σ weight · row` (rows of equal width `dim`),
/// normalised: a mixed query of several weighted terms. `None` when the
/// terms cancel out (a zero or non-finite sum).
pub fn weighted_sum<'a>(
    terms: impl IntoIterator<Item = (f32, &'a [f32])>,
    dim: usize,
) -> Option<Vec<f32>> {
    let mut sum = vec![0f32; dim];
    for (weight, row) in terms {
        for (s, x) in sum.iter_mut().zip(row) {
            *s += weight * x;
        }
    }
    let square: f32 = sum.iter().map(|v| v * v).sum();
    if square == 0.0 || !square.is_finite() {
        return None;
    }
    normalize(&mut sum);
    Some(sum)
}

/// `softmax(exp(logit_scale) · cos(images, texts))` over the texts: what
/// transformers' `logits_per_image.softmax(-1)` gives.
pub fn softmax_similarity(
    images: &[Vec<f32>],
    texts: &[Vec<f32>],
    logit_scale: f32,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    if images.is_empty() || texts.is_empty() {
        return Ok(vec![Vec::new(); images.len()]);
    }
    let to_tensor = |rows: &[Vec<f32>]| -> Result<Tensor> {
        let rows = normalize_rows(rows.to_vec());
        Ok(Tensor::from_vec(
            rows.concat(),
            (rows.len(), rows[0].len()),
            device,
        )?)
    };
    let logits =
        (to_tensor(images)?.matmul(&to_tensor(texts)?.t()?)? * (logit_scale as f64).exp())?;
    Ok(candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2()?)
}

/// Candidate indices ordered by score, best first; ties keep index order.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    // -0.0 and 0.0 tie, as in numpy; total_cmp alone would order them.
    let key = |i: usize| if scores[i] == 0.0 { 0.0 } else { scores[i] };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    order
}

/// The first `k` of [`ranking`], by partial selection instead of a full sort.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let key = |i: usize| if scores[i] == 0.0 { 0.0 } else { scores[i] };
    let better = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k, better);
        idx.truncate(k);
    }
    idx.sort_by(better);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_index() {
        assert_eq!(ranking(&[0.5, 0.9, 0.9, 0.1]), vec![1, 2, 0, 3]);
    }

    #[test]
    fn top_k_selects_like_a_full_stable_sort() {
        let scores = [0.3, 0.9, 0.1, 0.9, 0.5, -0.2, 0.5, 0.0, -0.0];
        for k in 0..=scores.len() + 1 {
            let mut full = ranking(&scores);
            full.truncate(k);
            assert_eq!(top_k(&scores, k), full, "k = {k}");
        }
    }

    #[test]
    fn weighted_sums_point_along_the_terms_or_cancel() {
        let (a, b) = ([1.0, 0.0], [0.0, 1.0]);
        let q = weighted_sum([(1.0, &a[..]), (1.0, &b[..])], 2).unwrap();
        assert!((q[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7 && q[0] == q[1]);
        assert_eq!(weighted_sum([(1.0, &a[..]), (-1.0, &a[..])], 2), None);
    }

    #[test]
    fn normalised_rows_have_unit_length() {
        let rows = normalize_rows(vec![vec![3.0, 4.0], vec![0.0, -2.0]]);
        assert_eq!(rows, vec![vec![0.6, 0.8], vec![0.0, -1.0]]);
    }
}
