//! Near-duplicate groups: files with identical content, and contents whose
//! embeddings are closer than a cosine threshold.

use std::collections::HashMap;

/// Groups of paths, each sorted, groups ordered by their first path.
/// `vectors` are normalised; `paths_by_hash` maps content to files. The scan
/// is all pairs, O(n²) in the number of distinct contents.
pub fn groups(
    vectors: &[(String, Vec<f32>)],
    paths_by_hash: &HashMap<String, Vec<String>>,
    threshold: f32,
) -> Vec<Vec<String>> {
    // Only vectors of indexed files: a video's frames (and rows of another
    // writer) must not bridge two photos into one group.
    let vectors: Vec<&(String, Vec<f32>)> = vectors
        .iter()
        .filter(|(h, _)| paths_by_hash.contains_key(h))
        .collect();
    let n = vectors.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            let cos: f32 = vectors[i]
                .1
                .iter()
                .zip(&vectors[j].1)
                .map(|(a, b)| a * b)
                .sum();
            if cos >= threshold {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut by_root: HashMap<usize, Vec<String>> = HashMap::new();
    for (i, (hash, _)) in vectors.iter().enumerate() {
        let r = root(&mut parent, i);
        by_root
            .entry(r)
            .or_default()
            .extend(paths_by_hash.get(hash).cloned().unwrap_or_default());
    }
    let mut out: Vec<Vec<String>> = by_root
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_near_duplicates_group() {
        let vectors = vec![
            ("a".to_string(), vec![1.0, 0.0]),
            ("b".to_string(), vec![0.999, 0.0447]),
            ("c".to_string(), vec![0.0, 1.0]),
        ];
        let paths: HashMap<String, Vec<String>> = [
            ("a".to_string(), vec!["1.png".to_string()]),
            ("b".to_string(), vec!["2.png".to_string()]),
            (
                "c".to_string(),
                vec!["3.png".to_string(), "3-copy.png".to_string()],
            ),
        ]
        .into();
        let g = groups(&vectors, &paths, 0.99);
        assert_eq!(
            g,
            vec![
                vec!["1.png".to_string(), "2.png".to_string()],
                vec!["3-copy.png".to_string(), "3.png".to_string()]
            ]
        );
    }
}
