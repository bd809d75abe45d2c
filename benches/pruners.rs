//! Pruner speed on the token counts of real VLMs, against the memory-bandwidth floor and against PyTorch.
//!
//! `cargo bench --bench pruners --all-features` (or `make bench`). Configurations:
//! LLaVA-1.5 image (576 x 4096, keep 64), LLaVA-NeXT (2880 x 4096, keep 288), LLaVA-OneVision video
//! (32 x 196 x 896, keep 10 %), long video (128 x 196 x 896, keep 10 %). `TOKENSIEVE_BENCH=image,next` picks some.
//!
//! The greedy methods (ToDRE, k-center, DivPrune, MMR, CDPruner) make about `k` passes over the `N x D` matrix, so
//! their floor is `k` streaming reads of it: the bench measures one plain read (a sum over the matrix, median of
//! several) and prints each method's time as a multiple of `k x` that read. When the setup's Python environment is
//! active (`VIRTUAL_ENV`), `benches/torch_reference.py` times straightforward PyTorch implementations of the same
//! formulas on the same CPU and thread count, and the last column is PyTorch time / tokensieve time.
//! Each figure is the median of several runs (one for the long video), all measured in one process run.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;
use tokensieve::pruners::primitives::SplitMix64;
use tokensieve::pruners::{prune, Budget, CpuBackend, Layout, Method, TokenSet};

struct Config {
    key: &'static str,
    label: &'static str,
    frames: usize,
    tokens_per_frame: usize,
    dim: usize,
    budget: Budget,
    repeats: usize,
}

const CONFIGS: [Config; 4] = [
    Config {
        key: "image",
        label: "LLaVA-1.5 576x4096 keep 64",
        frames: 1,
        tokens_per_frame: 576,
        dim: 4096,
        budget: Budget::Keep(64),
        repeats: 5,
    },
    Config {
        key: "next",
        label: "LLaVA-NeXT 2880x4096 keep 288",
        frames: 1,
        tokens_per_frame: 2880,
        dim: 4096,
        budget: Budget::Keep(288),
        repeats: 3,
    },
    Config {
        key: "video",
        label: "OneVision 32x196x896 keep 10%",
        frames: 32,
        tokens_per_frame: 196,
        dim: 896,
        budget: Budget::Ratio(0.1),
        repeats: 3,
    },
    Config {
        key: "long",
        label: "long video 128x196x896 keep 10%",
        frames: 128,
        tokens_per_frame: 196,
        dim: 896,
        budget: Budget::Ratio(0.1),
        repeats: 1,
    },
];

const METHODS: [&str; 5] = ["todre", "kcenter", "divprune", "mmr", "cdpruner"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(repeats: usize, mut f: impl FnMut() -> T) -> f64 {
    median(
        (0..repeats)
            .map(|_| {
                let start = Instant::now();
                black_box(f());
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Runs the PyTorch reference; returns method -> milliseconds, or why it could not run.
fn torch_times(c: &Config, k: usize) -> Result<serde_json::Value, String> {
    let venv = std::env::var("VIRTUAL_ENV").map_err(|_| "VIRTUAL_ENV unset (source the setup's env.sh)".to_string())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_reference.py");
    let out = Command::new(format!("{venv}/bin/python"))
        .args([script, "--n", &(c.frames * c.tokens_per_frame).to_string(), "--d", &c.dim.to_string()])
        .args([
            "--k",
            &k.to_string(),
            "--repeats",
            &c.repeats.to_string(),
            "--threads",
            &rayon::current_num_threads().to_string(),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed").to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn main() {
    let wanted = std::env::var("TOKENSIEVE_BENCH").unwrap_or_else(|_| "image,next,video,long".into());
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "| configuration | method | tokensieve ms | k x read floor ms | x floor | PyTorch ms | PyTorch / tokensieve |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for c in CONFIGS.iter().filter(|c| wanted.split(',').any(|w| w == c.key)) {
        let n = c.frames * c.tokens_per_frame;
        let mut rng = SplitMix64::new(7);
        let x = ndarray::Array2::from_shape_simple_fn((n, c.dim), || {
            (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        });
        let cls: Vec<f32> = (0..n).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32).collect();
        let query = ndarray::Array2::from_shape_simple_fn((8, c.dim), || {
            (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        });
        let layout = if c.frames > 1 { Layout::frames(c.frames, 14, 14) } else { Layout::Flat };
        let tokens = TokenSet::from_array(x.clone())
            .and_then(|t| t.with_layout(layout))
            .and_then(|t| t.with_cls_attention(cls))
            .and_then(|t| t.with_query(&CpuBackend, query))
            .expect("valid inputs");
        let k = c.budget.resolve(n).expect("valid budget").k;
        let data = x.as_slice().expect("standard layout");
        let read = time(9, || tokensieve::pruners::simd::stream_sum(data));
        let floor = read * k as f64;
        let torch = torch_times(c, k);
        if let Err(e) = &torch {
            eprintln!("PyTorch reference skipped for {}: {e}", c.label);
        }
        for name in METHODS {
            let (method, _) = Method::from_spec(name).expect("registered");
            let ms = time(c.repeats, || prune(&CpuBackend, &method, &tokens, c.budget).expect("prune"));
            let (pt, ratio) = match torch.as_ref().ok().and_then(|t| t[name].as_f64()) {
                Some(p) => (format!("{p:.1}"), format!("{:.1}x", p / ms)),
                None => ("-".into(), "-".into()),
            };
            println!("| {} | {name} | {ms:.1} | {floor:.1} | {:.2} | {pt} | {ratio} |", c.label, ms / floor);
        }
    }
}
