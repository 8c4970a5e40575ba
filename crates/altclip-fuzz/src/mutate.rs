//! Byte-level mutations of seed inputs, AFL-style but without coverage
//! feedback: bit flips, boundary values, deletions, duplications, splices,
//! and (for JSON and other text) numbers replaced by extreme ones.

/// A small, seedable PRNG (xorshift64*): runs are reproducible from the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is remapped: xorshift has no zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Byte values at the edges of signed and unsigned ranges.
const BYTES: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];

/// 16- and 32-bit boundary values, written little- or big-endian: the header
/// fields of image formats are both.
const WORDS: [u32; 8] = [
    0,
    1,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    100_000,
];

/// Numbers that break naive size arithmetic, for text formats.
const NUMBERS: [&str; 10] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "4294967296",
    "1099511627776",
    "18446744073709551616",
    "100000",
    "0.0",
    "NaN",
];

/// Applies 1–4 random mutations to `data`, drawing splices from `seeds`;
/// the result is at most `max_len` bytes.
pub fn mutate(data: &mut Vec<u8>, rng: &mut Rng, seeds: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        mutate_once(data, rng, seeds);
    }
    data.truncate(max_len);
}

fn mutate_once(data: &mut Vec<u8>, rng: &mut Rng, seeds: &[Vec<u8>]) {
    if data.is_empty() {
        data.push(BYTES[rng.below(BYTES.len())]);
        return;
    }
    let len = data.len();
    let at = rng.below(len);
    match rng.below(9) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = BYTES[rng.below(BYTES.len())],
        2 => {
            let word = WORDS[rng.below(WORDS.len())];
            let bytes = if rng.below(2) == 0 {
                word.to_le_bytes()
            } else {
                word.to_be_bytes()
            };
            let width = if rng.below(2) == 0 { 2 } else { 4 };
            let src = if width == 2 { &bytes[2..] } else { &bytes[..] };
            for (i, b) in src.iter().enumerate() {
                if let Some(d) = data.get_mut(at + i) {
                    *d = *b;
                }
            }
        }
        3 => {
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        4 => {
            let n = 1 + rng.below((len - at).min(256));
            let chunk = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, chunk);
        }
        5 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        6 if !seeds.is_empty() => {
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
        }
        7 => replace_number(data, rng),
        _ => data.truncate(at),
    }
}

/// Replaces one run of ASCII digits with an extreme number; appends one
/// when there is no digit.
fn replace_number(data: &mut Vec<u8>, rng: &mut Rng) {
    let number = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
    let digits: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit()))
        .collect();
    let Some(&start) = digits.get(rng.below(digits.len().max(1))) else {
        data.extend_from_slice(number);
        return;
    };
    let end = (start..data.len())
        .find(|&i| !data[i].is_ascii_digit())
        .unwrap_or(data.len());
    data.splice(start..end, number.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mutants_and_length_bound_holds() {
        let seeds = vec![b"{\"size\": 224, \"crop\": 32}".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| {
                    let mut d = seeds[0].clone();
                    mutate(&mut d, &mut rng, &seeds, 40);
                    assert!(d.len() <= 40);
                    d
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().any(|d| d != &seeds[0]));
    }

    #[test]
    fn numbers_are_replaced_whole() {
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let mut d = b"{\"a\": 224}".to_vec();
            replace_number(&mut d, &mut rng);
            let text = String::from_utf8(d).unwrap();
            assert!(
                text.starts_with("{\"a\": ") && text.ends_with('}'),
                "{text}"
            );
            assert!(!text.contains("224"), "{text}");
        }
    }
}
