//! `tokensieve bench`: the pipeline at several visual-token budgets, with a table (tokens, FLOPs, time per stage,
//! TTFT, KV bytes, peak RSS), JSON rows, and a chart ([`super::plot`]) of TTFT, the stages and the prefill's FLOPs
//! against the budget; `--frames-sweep` draws peak RSS and TTFT against the number of frames.

use super::plot::{Chart, Line};
use super::{emit, CliError};
use serde_json::json;
use std::path::PathBuf;
use tokensieve::pipeline::frames::FrameSource;
use tokensieve::pipeline::qa::{MediaKind, QaError, QaOptions};
use tokensieve::pruners::{Budget, Method, Pruner};

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `llava`/`llava_onevision`/`qwen2_5_vl`/`qwen3_vl` directory or a Hugging Face id (hub cache).
    #[arg(long, value_parser = super::model_arg)]
    model: PathBuf,
    /// The video (sampled uniformly).
    #[arg(long, conflicts_with = "image")]
    video: Option<PathBuf>,
    /// Images instead of a video (repeatable: one image goes through the model's single-image path, several are
    /// separate images).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Frame sampler `name:key=value,...` (uniform, uniform-interior, fps, dcode, or `f2c:...` with
    /// `--relevance clip:MODEL`, ranking frames by `--question`).
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
    /// Where to write the chart: PNG (or JPEG) by default, SVG for `.svg`; the budget runs draw TTFT, the stages
    /// and the prefill's FLOPs against the budget, the frames sweep peak RSS and TTFT against frames.
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
    /// The question every run asks (default: "Describe the video." / "Describe the images."); query-aware
    /// pruners read it.
    #[arg(long)]
    question: Option<String>,
    /// Where query-aware pruners get relevance: `llm` (default) or a dual encoder `clip:MODEL` / `siglip:MODEL`
    /// (its time is part of the encode stage).
    #[arg(long, default_value = "llm")]
    relevance: String,
    /// Frame counts to sweep instead (comma-separated, for example 8,32,128,512; a video only): each count samples
    /// the video again and runs every budget once; the rows give TTFT, encode time and that count's peak RSS.
    #[arg(long, value_delimiter = ',', conflicts_with = "image")]
    frames_sweep: Vec<usize>,
}

/// A relevance provider shared by every run.
type Provider = Option<std::sync::Arc<dyn tokensieve::pipeline::relevance::PatchRelevance>>;

/// The options of one bench run: `method` at budget `b` percent (no pruner at 100 %), `new_tokens` generated.
fn at_budget(method: &Method, b: f64, new_tokens: usize, relevance: &Provider) -> QaOptions {
    let pruners = if b < 100.0 { vec![method.clone()] } else { Vec::new() };
    QaOptions { pruners, budget: Budget::Ratio(b / 100.0), relevance: relevance.clone(), ..QaOptions::new(new_tokens) }
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
    relevance: &Provider,
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
            let question = args.question.as_deref().unwrap_or("Describe the video.");
            let ranking = super::Ranking { engine: &qa, provider: relevance.as_deref(), query: Some(question) };
            let mut frames = super::video_stream(video, &args.sampler, count, Some(ranking))?;
            let opts = at_budget(method, b, args.new_tokens, relevance);
            let question = args.question.as_deref().unwrap_or("Describe the video.");
            let r =
                qa.ask_source(&mut frames, MediaKind::Video, None, question, &opts, &mut |_| true).map_err(runtime)?.1;
            rows.push(json!({"frames": frames.len(), "frames_asked": count, "budget": format!("{b}%"),
                "visual_tokens": r.visual_tokens.last().map_or(0, |v| v.1), "prefill_tokens": r.prefill_tokens,
                "ttft_ms": r.ttft_ms, "stage_ms": r.stage_ms, "peak_rss_bytes": peak_rss_bytes()}));
        }
    }
    let title = format!("{}: peak memory and TTFT against frames ({})", model_name(&args.model), method.name());
    sweep_chart(&rows, budgets, title).save(&args.plot)?;
    if args.json {
        return emit(&format!("{}\n", json!({"rows": rows, "plot": args.plot, "backend": qa.backend()})));
    }
    let mut out = format!(
        "frames sweep of {}, pruner {}, tower batch {} views (peak RSS per frame count, reset before decoding; \
         frames decoded while the tower encodes)\n",
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
    out += &format!("plot: {}\n", args.plot.display());
    emit(&out)
}

/// The model's folder name, for chart titles.
fn model_name(model: &std::path::Path) -> String {
    model.file_name().map_or_else(|| model.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The budget chart: TTFT and each stage's milliseconds on the left axis, the prefill's FLOPs on the right, against
/// the budget (one point per budget, from the JSON rows).
fn budget_chart(rows: &[serde_json::Value], title: String) -> Chart {
    let budget = |r: &serde_json::Value| r["budget"].as_str().and_then(|b| b.trim_end_matches('%').parse().ok());
    let line = |label: &str, value: &dyn Fn(&serde_json::Value) -> f64| Line {
        label: label.to_string(),
        points: rows.iter().filter_map(|r| budget(r).map(|b| (b, value(r)))).collect(),
    };
    let mut lines = vec![line("TTFT", &|r| r["ttft_ms"].as_f64().unwrap_or(0.0))];
    for stage in ["preprocess", "encode", "prune", "prefill"] {
        lines.push(line(&format!("{stage} stage"), &|r| r["stage_ms"][stage].as_f64().unwrap_or(0.0)));
    }
    Chart {
        title,
        x_label: "budget (% of the visual tokens kept)".into(),
        y_label: "time (ms)".into(),
        lines,
        right: Some((
            "LLM prefill (TFLOPs)".into(),
            vec![line("prefill FLOPs", &|r| r["llm_tflops"].as_f64().unwrap_or(0.0))],
        )),
    }
}

/// The frames-sweep chart: peak RSS per budget on the left axis, TTFT per budget on the right, against frames.
fn sweep_chart(rows: &[serde_json::Value], budgets: &[f64], title: String) -> Chart {
    let per_budget = |key: &str, scale: f64, what: &str| -> Vec<Line> {
        budgets
            .iter()
            .map(|b| {
                let name = format!("{b}%");
                Line {
                    label: format!("{what} at {name}"),
                    points: rows
                        .iter()
                        .filter(|r| r["budget"].as_str() == Some(name.as_str()))
                        .map(|r| (r["frames"].as_f64().unwrap_or(0.0), r[key].as_f64().unwrap_or(0.0) / scale))
                        .collect(),
                }
            })
            .collect()
    };
    Chart {
        title,
        x_label: "frames".into(),
        y_label: "peak RSS (MiB)".into(),
        lines: per_budget("peak_rss_bytes", 1024.0 * 1024.0, "peak RSS"),
        right: Some(("TTFT (ms)".into(), per_budget("ttft_ms", 1.0, "TTFT"))),
    }
}

pub fn run(args: Args) -> Result<(), CliError> {
    let choice = args.backend.choice(args.device.as_deref())?;
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
        let relevance = super::ask::relevance_provider(&args.relevance, args.device.as_deref())?;
        return sweep(&args, &budgets, &method, choice, &relevance);
    }
    let (kind, question) = match args.video {
        Some(_) => (MediaKind::Video, "Describe the video."),
        None => (MediaKind::Images, "Describe the images."),
    };
    let question = args.question.as_deref().unwrap_or(question);
    let relevance = super::ask::relevance_provider(&args.relevance, args.device.as_deref())?;
    let source = match &args.video {
        Some(v) => v.display().to_string(),
        None => format!("{} image(s)", args.image.len()),
    };
    args.backend.check_model(&args.model)?;
    let qa = args.backend.load(&args.model, choice).map_err(runtime)?;
    let ranking = super::Ranking { engine: &qa, provider: relevance.as_deref(), query: Some(question) };
    let frames = super::frames_from(args.video.as_deref(), &args.image, &args.sampler, args.frames, Some(ranking))?;
    let mut rows = Vec::new();
    let bar = super::progress_bar(budgets.len() * args.repeats.max(1), "runs");
    for &b in &budgets {
        let mut records = Vec::new();
        for _ in 0..args.repeats.max(1) {
            let opts = at_budget(&method, b, args.new_tokens, &relevance);
            records.push(qa.ask(&frames, kind, question, &opts).map_err(runtime)?.1);
            bar.inc(1);
        }
        records.sort_by(|a, b| a.ttft_ms.total_cmp(&b.ttft_ms));
        let r = &records[records.len() / 2];
        let visual = r.visual_tokens.last().map_or(0, |v| v.1);
        let tflops = 2.0 * r.llm_macs_swiglu / 1e12;
        let per_second = |count: usize, ms: f64| if ms > 0.0 { count as f64 * 1e3 / ms } else { 0.0 };
        let prefill_tps = per_second(r.prefill_tokens, r.stage_ms.get("prefill").copied().unwrap_or(0.0));
        let decode_tps = per_second(r.decode_steps, r.stage_ms.get("generate").copied().unwrap_or(0.0));
        rows.push(json!({"budget": format!("{b}%"), "visual_tokens": visual, "prefill_tokens": r.prefill_tokens,
            "prefill_tokens_per_s": prefill_tps, "decode_steps": r.decode_steps, "decode_tokens_per_s": decode_tps,
            "llm_tflops": tflops, "llm_tflops_fastv": 2.0 * r.llm_macs_fastv / 1e12, "ttft_ms": r.ttft_ms,
            "stage_ms": r.stage_ms, "kv_bytes": r.kv_bytes, "peak_rss_bytes": peak_rss_bytes(),
            "kept": r.kept, "notes": r.notes}));
    }
    let title = format!("{}: TTFT and prefill FLOPs against the budget ({})", model_name(&args.model), method.name());
    budget_chart(&rows, title).save(&args.plot)?;
    if args.json {
        return emit(&format!("{}\n", json!({"rows": rows, "plot": args.plot, "backend": qa.backend()})));
    }
    let mut out = format!(
        "{} frames of {}, pruner {}, backend {} (median of {}; FLOPs = 2 x SwiGLU/GQA MACs of the prefill)\n",
        frames.len(),
        source,
        method.name(),
        qa.backend(),
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
    out += &format!("plot: {}\n", args.plot.display());
    emit(&out)
}
