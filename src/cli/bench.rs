//! `tokensieve bench`: the pipeline at several visual-token budgets, with a table (tokens, FLOPs, time per stage,
//! TTFT, KV bytes, peak RSS), JSON rows, and a PNG plot of TTFT and prefill FLOPs against the budget.

use super::{emit, CliError};
use serde_json::json;
use std::path::PathBuf;
use tokensieve::pipeline::qa::{MediaKind, QaError, QaOptions};
use tokensieve::pruners::{Budget, Method, Pruner};

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `llava`/`llava_onevision` directory or a Hugging Face id (hub cache).
    #[arg(long, value_parser = super::model_arg)]
    model: PathBuf,
    /// The video (sampled uniformly).
    #[arg(long, conflicts_with = "image")]
    video: Option<PathBuf>,
    /// Images instead of a video (repeatable: one image goes through the model's single-image path, several are
    /// separate images).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Frame sampler `name:key=value,...` (uniform, uniform-interior, fps, dcode, f2c with a relevance file).
    #[arg(long, default_value = "uniform")]
    sampler: String,
    /// Frames to sample (for samplers with a `frames` parameter that the spec does not set).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Budgets as percentages of the visual tokens, comma-separated.
    #[arg(long, default_value = "100%,50%,25%,10%")]
    budgets: String,
    /// The pruner for budgets below 100 %.
    #[arg(long, default_value = "todre")]
    pruner: String,
    /// Repetitions per budget (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Where to write the plot.
    #[arg(long, default_value = "bench.png")]
    plot: PathBuf,
    /// `cpu` or `cuda` for the torch backend (default: CUDA when available).
    #[arg(long, value_parser = ["cpu", "cuda"])]
    device: Option<String>,
    /// Tokens to generate per run: the first comes out of the prefill, the rest measure decoding.
    #[arg(long, default_value_t = 16)]
    new_tokens: usize,
    #[command(flatten)]
    backend: super::BackendFlags,
    /// Print JSON rows.
    #[arg(long)]
    json: bool,
    /// Frame counts to sweep instead (comma-separated, for example 8,32,128,512; a video only): each count samples
    /// the video again and runs every budget once; the rows give TTFT, encode time and that count's peak RSS.
    #[arg(long, value_delimiter = ',', conflicts_with = "image")]
    frames_sweep: Vec<usize>,
}

/// The options of one bench run: `method` at budget `b` percent (no pruner at 100 %), `new_tokens` generated.
fn at_budget(method: &Method, b: f64, new_tokens: usize) -> QaOptions {
    let pruners = if b < 100.0 { vec![method.clone()] } else { Vec::new() };
    QaOptions { pruners, budget: Budget::Ratio(b / 100.0), ..QaOptions::new(new_tokens) }
}

/// Resets the process's peak RSS (`VmHWM`) so the next reading is the peak of what follows (Linux's `clear_refs`
/// value 5; elsewhere the reading stays the peak since start, which the sweep's ascending order keeps meaningful).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `--frames-sweep`: for each frame count (ascending), the video sampled again and every budget once, with the
/// peak RSS of that count (reset before its frames are decoded, so it includes decoding them).
fn sweep(
    args: &Args,
    budgets: &[f64],
    method: &Method,
    choice: tokensieve::pipeline::engine::EngineChoice,
) -> Result<(), CliError> {
    let runtime = |e: QaError| CliError::runtime(e.to_string(), None);
    let Some(video) = args.video.as_deref() else {
        return Err(CliError::usage("--frames-sweep samples a video", "add --video FILE"));
    };
    let mut counts = args.frames_sweep.clone();
    counts.sort_unstable();
    counts.dedup();
    if counts.first() == Some(&0) {
        return Err(CliError::usage("--frames-sweep needs counts of at least 1", "for example 8,32,128"));
    }
    args.backend.check_model(&args.model)?;
    let qa = args.backend.load(&args.model, choice).map_err(runtime)?;
    let mut rows = Vec::new();
    for &count in &counts {
        for &b in budgets {
            reset_peak_rss();
            let frames = super::frames_from(Some(video), &[], &args.sampler, count)?;
            let r = qa
                .ask(&frames, MediaKind::Video, "Describe the video.", &at_budget(method, b, args.new_tokens))
                .map_err(runtime)?
                .1;
            rows.push(json!({"frames": frames.len(), "frames_asked": count, "budget": format!("{b}%"),
                "visual_tokens": r.visual_tokens.last().map_or(0, |v| v.1), "prefill_tokens": r.prefill_tokens,
                "ttft_ms": r.ttft_ms, "stage_ms": r.stage_ms, "peak_rss_bytes": peak_rss_bytes()}));
        }
    }
    if args.json {
        return emit(&format!("{}\n", json!({"rows": rows})));
    }
    let mut out = format!(
        "frames sweep of {}, pruner {}, tower batch {} views (peak RSS per frame count, reset before decoding)\n",
        video.display(),
        method.name(),
        qa.encode_batch()
    );
    out += "| frames | budget | visual tokens | prefill tokens | TTFT ms | encode ms | prefill ms | peak RSS MiB |\n";
    out += "|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for r in &rows {
        let ms = |k: &str| r["stage_ms"][k].as_f64().unwrap_or(0.0);
        out += &format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} |\n",
            r["frames"],
            r["budget"].as_str().unwrap_or(""),
            r["visual_tokens"],
            r["prefill_tokens"],
            r["ttft_ms"].as_f64().unwrap_or(0.0),
            ms("encode"),
            ms("prefill"),
            r["peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
        );
    }
    emit(&out)
}

/// Two series against the budget: TTFT (blue) and prefill FLOPs (orange), each scaled to its own maximum.
fn plot(rows: &[(f64, f64, f64)], path: &std::path::Path) -> Result<(), CliError> {
    let (w, h, margin) = (640u32, 360u32, 30f64);
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let axis = image::Rgb([0, 0, 0]);
    for x in margin as u32..w - margin as u32 {
        img.put_pixel(x, h - margin as u32, axis);
    }
    for y in margin as u32..h - margin as u32 {
        img.put_pixel(margin as u32, y, axis);
    }
    let to_px = |budget: f64, value: f64, max: f64| {
        let x = margin + budget / 100.0 * (w as f64 - 2.0 * margin);
        let y = (h as f64 - margin) - if max > 0.0 { value / max } else { 0.0 } * (h as f64 - 2.0 * margin);
        (x, y)
    };
    for (series, color) in [(1usize, image::Rgb([31, 119, 180])), (2, image::Rgb([255, 127, 14]))] {
        let max = rows.iter().map(|r| if series == 1 { r.1 } else { r.2 }).fold(0.0, f64::max);
        let points: Vec<(f64, f64)> =
            rows.iter().map(|r| to_px(r.0, if series == 1 { r.1 } else { r.2 }, max)).collect();
        for pair in points.windows(2) {
            let steps = 200;
            for s in 0..=steps {
                let t = s as f64 / steps as f64;
                let (x, y) = (pair[0].0 + t * (pair[1].0 - pair[0].0), pair[0].1 + t * (pair[1].1 - pair[0].1));
                img.put_pixel(x.round() as u32, y.round() as u32, color);
            }
        }
        for &(x, y) in &points {
            for dx in -3i32..=3 {
                for dy in -3i32..=3 {
                    let (px, py) = (x as i32 + dx, y as i32 + dy);
                    if px >= 0 && py >= 0 && (px as u32) < w && (py as u32) < h {
                        img.put_pixel(px as u32, py as u32, color);
                    }
                }
            }
        }
    }
    img.save(path).map_err(|e| CliError::runtime(format!("{}: {e}", path.display()), None))
}

pub fn run(args: Args) -> Result<(), CliError> {
    let choice = args.backend.choice(args.device.as_deref(), "f32")?;
    let budgets: Vec<f64> = args
        .budgets
        .split(',')
        .map(|b| b.trim().trim_end_matches('%').parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            CliError::usage(
                format!("--budgets {} is not a list of percentages", args.budgets),
                "for example 100%,50%,25%,10%",
            )
        })?;
    if let Some(b) = budgets.iter().find(|b| !(**b > 0.0 && **b <= 100.0)) {
        return Err(CliError::usage(format!("budget {b}% is outside (0, 100]"), "for example 100%,50%,25%,10%"));
    }
    let (method, _) =
        Method::from_spec(&args.pruner).map_err(|e| CliError::usage(e.to_string(), "see `tokensieve prune --list`"))?;
    if args.new_tokens == 0 {
        return Err(CliError::usage("--new-tokens 0 generates nothing to time", "for example --new-tokens 16"));
    }
    let runtime = |e: QaError| CliError::runtime(e.to_string(), None);
    if !args.frames_sweep.is_empty() {
        return sweep(&args, &budgets, &method, choice);
    }
    let frames = super::frames_from(args.video.as_deref(), &args.image, &args.sampler, args.frames)?;
    let (kind, question) = match args.video {
        Some(_) => (MediaKind::Video, "Describe the video."),
        None => (MediaKind::Images, "Describe the images."),
    };
    let source = match &args.video {
        Some(v) => v.display().to_string(),
        None => format!("{} image(s)", args.image.len()),
    };
    args.backend.check_model(&args.model)?;
    let qa = args.backend.load(&args.model, choice).map_err(runtime)?;
    let mut rows = Vec::new();
    let mut points = Vec::new();
    let bar = super::progress_bar(budgets.len() * args.repeats.max(1), "runs");
    for &b in &budgets {
        let mut records = Vec::new();
        for _ in 0..args.repeats.max(1) {
            records.push(qa.ask(&frames, kind, question, &at_budget(&method, b, args.new_tokens)).map_err(runtime)?.1);
            bar.inc(1);
        }
        records.sort_by(|a, b| a.ttft_ms.total_cmp(&b.ttft_ms));
        let r = &records[records.len() / 2];
        let visual = r.visual_tokens.last().map_or(0, |v| v.1);
        let tflops = 2.0 * r.llm_macs_swiglu / 1e12;
        points.push((b, r.ttft_ms, tflops));
        let per_second = |count: usize, ms: f64| if ms > 0.0 { count as f64 * 1e3 / ms } else { 0.0 };
        let prefill_tps = per_second(r.prefill_tokens, r.stage_ms.get("prefill").copied().unwrap_or(0.0));
        let decode_tps = per_second(r.decode_steps, r.stage_ms.get("generate").copied().unwrap_or(0.0));
        rows.push(json!({"budget": format!("{b}%"), "visual_tokens": visual, "prefill_tokens": r.prefill_tokens,
            "prefill_tokens_per_s": prefill_tps, "decode_steps": r.decode_steps, "decode_tokens_per_s": decode_tps,
            "llm_tflops": tflops, "llm_tflops_fastv": 2.0 * r.llm_macs_fastv / 1e12, "ttft_ms": r.ttft_ms,
            "stage_ms": r.stage_ms, "kv_bytes": r.kv_bytes, "peak_rss_bytes": peak_rss_bytes()}));
    }
    plot(&points, &args.plot)?;
    if args.json {
        return emit(&format!("{}\n", json!({"rows": rows, "plot": args.plot})));
    }
    let mut out = format!(
        "{} frames of {}, pruner {}, backend {} (median of {}; FLOPs = 2 x SwiGLU/GQA MACs of the prefill)\n",
        frames.len(),
        source,
        method.name(),
        match args.backend.backend.as_str() {
            "onnx" => format!("onnx {}", args.backend.precision),
            other => other.to_string(),
        },
        args.repeats.max(1)
    );
    out += "| budget | visual tokens | prefill tokens | LLM TFLOPs | TTFT ms | preprocess ms | encode ms | prune ms | prefill ms | prefill tok/s | decode tok/s | KV bytes | peak RSS MiB |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in &rows {
        let ms = |k: &str| r["stage_ms"][k].as_f64().unwrap_or(0.0);
        out += &format!(
            "| {} | {} | {} | {:.6} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {} | {:.0} |\n",
            r["budget"].as_str().unwrap_or(""),
            r["visual_tokens"],
            r["prefill_tokens"],
            r["llm_tflops"].as_f64().unwrap_or(0.0),
            r["ttft_ms"].as_f64().unwrap_or(0.0),
            ms("preprocess"),
            ms("encode"),
            ms("prune"),
            ms("prefill"),
            r["prefill_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["decode_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["kv_bytes"],
            r["peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
        );
    }
    out += &format!(
        "plot: {} (blue: TTFT, orange: FLOPs, each scaled to its maximum; x: budget 0-100 %)\n",
        args.plot.display()
    );
    emit(&out)
}
