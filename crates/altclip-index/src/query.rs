//! Queries: text in any language the model knows, an image path, or a
//! weighted mix such as `"2:一只猫" + ./beach.jpg - "雪"`.

use std::path::{Path, PathBuf};

use altclip::embedding::weighted_sum;
use altclip::preprocess::open_rgb;
use altclip::AltClip;

use crate::error::{Error, Result};

/// One term of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Text(String),
    Image(PathBuf),
}

/// A term with its signed weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub weight: f32,
    pub term: Term,
}

/// Parses command-line words: terms separated by `+` or `-` words; a term
/// may start with `WEIGHT:` (e.g. `2:一只猫`); a term naming an existing file
/// is an image, anything else is text.
pub fn parse(words: &[String]) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut sign = 1.0;
    let mut expect_term = true;
    for word in words {
        match word.as_str() {
            "+" | "-" if !expect_term => {
                sign = if word == "+" { 1.0 } else { -1.0 };
                expect_term = true;
            }
            "+" | "-" => {
                return Err(Error::Invalid(format!(
                    "query: `{word}` must stand between two terms, e.g. \"cat\" {word} \"snow\""
                )))
            }
            _ if !expect_term => {
                return Err(Error::Invalid(format!(
                    "query: put + or - between terms (before {word:?}), or quote a multi-word text"
                )))
            }
            _ => {
                let (weight, rest) = split_weight(word);
                let term = if Path::new(rest).is_file() {
                    Term::Image(PathBuf::from(rest))
                } else {
                    Term::Text(rest.to_string())
                };
                parts.push(Part {
                    weight: sign * weight,
                    term,
                });
                sign = 1.0;
                expect_term = false;
            }
        }
    }
    if parts.is_empty() || expect_term {
        return Err(Error::Invalid(
            "query: empty, or it ends with + or -".into(),
        ));
    }
    Ok(parts)
}

fn split_weight(word: &str) -> (f32, &str) {
    match word.split_once(':') {
        Some((w, rest)) if !rest.is_empty() => match w.trim().parse::<f32>() {
            Ok(w) if w.is_finite() => (w, rest),
            _ => (1.0, word),
        },
        _ => (1.0, word),
    }
}

/// The normalised sum of the terms' normalised embeddings, weighted.
pub fn embed(clip: &AltClip, parts: &[Part], max_pixels: u64) -> Result<Vec<f32>> {
    let mut terms = Vec::with_capacity(parts.len());
    for part in parts {
        let v = match &part.term {
            Term::Text(t) => clip.embed_texts(&[t.as_str()])?.remove(0),
            Term::Image(p) => clip.embed_images(&[open_rgb(p, max_pixels)?])?.remove(0),
        };
        terms.push((part.weight, v));
    }
    weighted_sum(
        terms.iter().map(|(w, v)| (*w, v.as_slice())),
        clip.embedding_dim(),
    )
    .ok_or_else(|| Error::Invalid("query: the terms cancel out".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn weighted_mixes_parse() {
        let parts = parse(&words(&["2:一只猫", "+", "Cargo.toml", "-", "雪"])).unwrap();
        assert_eq!(
            parts[0],
            Part {
                weight: 2.0,
                term: Term::Text("一只猫".into())
            }
        );
        assert_eq!(
            parts[1],
            Part {
                weight: 1.0,
                term: Term::Image("Cargo.toml".into())
            }
        );
        assert_eq!(
            parts[2],
            Part {
                weight: -1.0,
                term: Term::Text("雪".into())
            }
        );
        assert_eq!(parse(&words(&["12:30 meeting"])).unwrap()[0].weight, 12.0);
        assert_eq!(
            parse(&words(&["a:b"])).unwrap()[0].term,
            Term::Text("a:b".into())
        );
        assert!(parse(&words(&["cat", "dog"])).is_err());
        assert!(parse(&words(&["cat", "+"])).is_err());
        assert!(parse(&words(&["-", "cat"])).is_err());
    }
}
