//! Decode + CLIP resize time per image file, on one thread: what the
//! indexer spends per photo before the model runs.
//!
//! ```text
//! cargo run --release -p altclip --example decode_rate -- photo.jpg [REPS]
//! ```

use std::time::Instant;

use altclip::preprocess::{
    decode_rgb, read_image_file, Preprocessor, PreprocessorConfig, DEFAULT_MAX_PIXELS,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: decode_rate FILE [REPS]")?;
    let reps: usize = args.next().map_or(Ok(5), |r| r.parse())?;
    let bytes = read_image_file(path.as_ref(), u64::MAX)?;
    let pre = Preprocessor {
        config: PreprocessorConfig::clip_default(224),
    };
    let (mut decode, mut resize) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let img = decode_rgb(&bytes, &path, DEFAULT_MAX_PIXELS)?;
        decode.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let small = pre.resize(&img);
        resize.push(t.elapsed().as_secs_f64());
        std::hint::black_box(small);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{path}: decode {:.1} ms, resize {:.1} ms (median of {reps}, one thread)",
        median(&mut decode) * 1e3,
        median(&mut resize) * 1e3
    );
    Ok(())
}
