//! Prune the visual tokens of a real video and draw what each method kept.
//!
//! `cargo run --release --example prune_video -- VIDEO OUT_DIR`
//!
//! Eight frames are sampled uniformly (seek-based) at 224 x 224 and cut into a 14 x 14 grid of 16 x 16 patches, the
//! token grid of a ViT-B/16. No pretrained vision encoder is reachable offline, so each token's features are its
//! patch's 4 x 4-pooled RGB values (48 numbers): enough to show what diversity- and redundancy-driven methods do with
//! real footage; with a model, the same calls take the encoder's features. For every method the example prints how
//! many tokens it kept and how long it took, and writes a contact sheet with the dropped patches dimmed.

use std::path::PathBuf;
use std::time::Instant;
use tokensieve::pruners::{prune, Budget, CpuBackend, Layout, Method, TokenSet};
use tokensieve::video::sample_uniform;

const FRAMES: usize = 8;
const SIZE: u32 = 224;
const PATCH: usize = 16;
const GRID: usize = SIZE as usize / PATCH;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(video), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: prune_video VIDEO OUT_DIR".into());
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let start = Instant::now();
    let frames = sample_uniform(video.as_ref(), FRAMES, SIZE, SIZE)?;
    println!("decoded {} frames of {video} in {:.0} ms", frames.len(), start.elapsed().as_secs_f64() * 1e3);

    // Token (f, gy, gx): the 4 x 4 average-pooled RGB of its 16 x 16 patch.
    let n = frames.len() * GRID * GRID;
    let features = ndarray::Array2::from_shape_fn((n, 48), |(t, c)| {
        let (f, cell) = (t / (GRID * GRID), t % (GRID * GRID));
        let (gy, gx) = (cell / GRID, cell % GRID);
        let (sub, channel) = (c / 3, c % 3);
        let (sy, sx) = (sub / 4, sub % 4);
        let mut sum = 0f32;
        for y in 0..4 {
            for x in 0..4 {
                let py = gy * PATCH + sy * 4 + y;
                let px = gx * PATCH + sx * 4 + x;
                sum += frames[f].rgb[(py * SIZE as usize + px) * 3 + channel] as f32;
            }
        }
        sum / (16.0 * 255.0) - 0.5
    });
    let tokens = TokenSet::from_array(features)?.with_layout(Layout::frames(frames.len(), GRID, GRID))?;
    let budget = Budget::Ratio(0.1);
    println!("{n} visual tokens ({} frames x {GRID} x {GRID}), keeping 10 %", frames.len());
    println!("{:<10} {:>6} {:>10}  picture", "method", "kept", "time (ms)");
    for spec in ["todre", "kcenter", "divprune", "mmr:importance=norm", "dycoke", "dcode", "tome", "pool", "random"] {
        let (method, _) = Method::from_spec(spec)?;
        let start = Instant::now();
        let name = spec.split(':').next().unwrap_or(spec);
        let selection = match prune(&CpuBackend, &method, &tokens, budget) {
            Ok(s) => s,
            Err(e) => {
                // DyCoke keeps the first frame of every 4-frame window whole: 10 % of 8 frames is below that.
                println!("{name:<10} {:>6} {:>10}  skipped: {e}", "-", "-");
                continue;
            }
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let picture = out.join(format!("{name}.png"));
        contact_sheet(&frames, &selection.kept, &picture)?;
        println!("{name:<10} {:>6} {ms:>10.2}  {}", selection.kept.len(), picture.display());
    }
    Ok(())
}

/// Frames side by side (4 per row) with dropped patches dimmed to 25 % and kept ones at full brightness.
fn contact_sheet(
    frames: &[tokensieve::video::Frame],
    kept: &[usize],
    path: &std::path::Path,
) -> image::ImageResult<()> {
    let size = SIZE as usize;
    let per_row = 4;
    let rows = frames.len().div_ceil(per_row);
    let mut sheet = image::RgbImage::new((per_row * size) as u32, (rows * size) as u32);
    let mut keep = vec![false; frames.len() * GRID * GRID];
    kept.iter().for_each(|&i| keep[i] = true);
    for (f, frame) in frames.iter().enumerate() {
        let (ox, oy) = ((f % per_row) * size, (f / per_row) * size);
        for y in 0..size {
            for x in 0..size {
                let token = f * GRID * GRID + (y / PATCH) * GRID + x / PATCH;
                let i = (y * size + x) * 3;
                let scale = if keep[token] { 1.0 } else { 0.25 };
                let px = [0, 1, 2].map(|c| (frame.rgb[i + c] as f32 * scale) as u8);
                sheet.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
        }
    }
    sheet.save(path)
}
