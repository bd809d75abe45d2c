//! Prefill time against kept visual tokens on a model of realistic size: a Qwen2-0.5B language model with random
//! weights (written once in the Hugging Face layout under `$TOKENSIEVE_HOME/bench/`, bf16) fed the visual tokens of a
//! 32-frame video as LLaVA-OneVision makes them (SigLIP-so400m: 27x27 patches per 384-px frame, pooled 2x2 to 14x14,
//! so 32 x 196 = 6,272 visual tokens plus the newline and a 24-token text prompt).
//!
//! `cargo bench --bench prefill --all-features` (or `make bench`). Target: prefill at 10 % of the visual tokens at
//! least 5x faster than at 100 %, on CPU. Which tokens are kept does not change the cost, so every budget keeps an
//! evenly spaced subset. Each figure is the median of `TOKENSIEVE_BENCH_REPEATS` runs (default 2) after one warm-up at
//! the smallest budget, all in one process; the vision tower's cost is the same at every budget and is not included.

use std::time::Instant;
use tch::{Device, Kind, Tensor};
use tokensieve::models::llama::{KvCache, Llama};
use tokensieve::models::random_checkpoint::{write_qwen2, TextShape};
use tokensieve::models::safetensors::StoreAs;

const FRAMES: usize = 32;
const PER_FRAME: usize = 14 * 14;
const TEXT: usize = 24;

fn main() {
    let dir = tokensieve::assets::home().join("bench/qwen2-0.5b-random");
    if !dir.join("config.json").is_file() {
        eprintln!("writing a random Qwen2-0.5B to {} (once)...", dir.display());
        let partial = dir.with_extension("partial");
        write_qwen2(&partial, &TextShape::qwen2_0_5b(), 0, StoreAs::Bf16).expect("write the benchmark model");
        std::fs::rename(&partial, &dir).expect("rename");
    }
    let model = Llama::from_hf_dir(&dir, Device::Cpu).expect("load the benchmark model");
    let repeats: usize = std::env::var("TOKENSIEVE_BENCH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let hidden = model.config.hidden as i64;
    let visual = FRAMES * PER_FRAME;
    let budgets = [1.0, 0.25, 0.10];
    let prefill = |kept: usize| -> f64 {
        let _guard = tch::no_grad_guard();
        // Embedding-sized random rows: the cost depends on the sequence length only.
        let x = Tensor::randn([1, (TEXT + kept + 1) as i64, hidden], (Kind::Float, Device::Cpu)) * 0.02;
        let start = Instant::now();
        let logits = model.forward_embeds(x, &mut KvCache::default()).expect("prefill");
        let _ = logits.double_value(&[0, 0]);
        start.elapsed().as_secs_f64() * 1e3
    };
    let kept = |b: f64| ((visual as f64) * b).round() as usize;
    prefill(kept(budgets[2]));
    let mut rows = Vec::new();
    for &b in &budgets {
        let mut times: Vec<f64> = (0..repeats.max(1)).map(|_| prefill(kept(b))).collect();
        times.sort_by(f64::total_cmp);
        rows.push((b, kept(b), times[times.len() / 2]));
    }
    println!(
        "prefill of a {FRAMES}-frame LLaVA-OneVision prompt on Qwen2-0.5B (random weights, f32 compute, {} CPU threads, \
         median of {repeats})",
        tch::get_num_threads()
    );
    println!("| visual tokens kept | prefill tokens | prefill ms | speedup vs 100 % |");
    println!("|---:|---:|---:|---:|");
    for &(b, k, ms) in &rows {
        println!("| {k} ({:.0} %) | {} | {ms:.0} | {:.2}x |", b * 100.0, TEXT + k + 1, rows[0].2 / ms);
    }
    let at10 = rows[0].2 / rows[2].2;
    println!("target: >= 5x at 10 %: {}", if at10 >= 5.0 { "met" } else { "NOT met" });
}
