//! `tokensieve eval` and `tokensieve merge`: answer a DriveLM test file with the pipeline (one flushed JSON line per
//! sample, `--resume`, `--shard i/n`) and write `results.json` and the challenge's `output.json`; `merge` joins shard
//! folders into one result that equals a single run's.

use super::{emit, CliError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokensieve::eval::drivelm;
use tokensieve::eval::runner::{self, Shard};

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The benchmark (DriveLM so far).
    #[arg(long, value_parser = ["drivelm"])]
    task: String,
    /// The test file (DriveLM JSON: scenes -> key_frames -> QA; EM-VLM4AD's list) or a DriveLM-CARLA folder.
    #[arg(long)]
    data: PathBuf,
    /// Folder the file's image paths are relative to (their leading `../` is dropped).
    #[arg(long)]
    data_root: PathBuf,
    /// A LLaVA model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    pruning: super::llm::PruningFlags,
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Output folder (`samples_drivelm.jsonl`, `results.json`).
    #[arg(long)]
    out: PathBuf,
    /// Only the first N samples (in file order, before sharding).
    #[arg(long)]
    limit: Option<usize>,
    /// Run shard `i` of `n` (samples whose index mod n is i).
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// Keep the samples already answered in the output folder and answer the rest (failed ones again).
    #[arg(long)]
    resume: bool,
}

/// Arguments of `merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The benchmark's test file (the same one the shards ran on).
    #[arg(long)]
    data: PathBuf,
    /// Folder for the merged `samples_drivelm.jsonl` and `results.json`.
    #[arg(long)]
    out: PathBuf,
    /// Shard output folders.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
}

fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError::runtime(e.to_string(), None)
}

fn load_frames(path: &Path) -> Result<Vec<drivelm::KeyFrame>, CliError> {
    drivelm::load_path(path)
        .map_err(|e| CliError::usage(e, "expected DriveLM JSON, EM-VLM4AD's list or a CARLA folder"))
}

/// Writes `results.json` and the challenge's `output.json` (for `score --judge` or the official script).
fn write_results(out: &Path, results: &Value, lines: &[Value]) -> Result<(), CliError> {
    for (name, value) in [("results.json", results), ("output.json", &runner::challenge_output(lines))] {
        let path = out.join(name);
        let text = serde_json::to_string_pretty(value).map_err(runtime)?;
        std::fs::write(&path, text + "\n").map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// The configuration recorded (and hashed) in `results.json`: what changes the answers, not where files lie.
fn config(args: &Args) -> Value {
    json!({
        "task": args.task,
        "data": args.data.file_name().map(|n| n.to_string_lossy().to_string()),
        "model": args.model.file_name().map(|n| n.to_string_lossy().to_string()),
        "pruner": args.pruning.pruner,
        "keep": args.pruning.keep,
        "ratio": args.pruning.ratio,
        "in_llm": args.pruning.in_llm,
        "max_new_tokens": args.max_new_tokens,
        "limit": args.limit,
    })
}

/// Runs `eval`.
pub fn run(args: Args) -> Result<(), CliError> {
    let opts = super::llm::qa_options(&args.pruning, args.max_new_tokens)?;
    let frames = load_frames(&args.data)?;
    let qa = tokensieve::pipeline::video_qa::VideoQa::load(&args.model, tch::Device::cuda_if_available())
        .map_err(runtime)?;
    let started = std::time::Instant::now();
    let answered = runner::run(
        &qa,
        &frames,
        &args.data_root,
        &opts,
        &args.out,
        args.limit,
        args.shard,
        args.resume,
        |n, total| {
            let elapsed = started.elapsed().as_secs_f64();
            let rate = n as f64 / elapsed.max(1e-9);
            let eta = (total - n) as f64 / rate.max(1e-9);
            eprint!(
                "\r{n}/{total} samples  {rate:.2}/s  ETA {:02}:{:02}:{:02}   ",
                eta as u64 / 3600,
                eta as u64 / 60 % 60,
                eta as u64 % 60
            );
        },
    )
    .map_err(runtime)?;
    if answered > 0 {
        eprintln!();
    }
    let lines = runner::read_lines(std::slice::from_ref(&args.out)).map_err(runtime)?;
    let results = runner::results(&lines, &frames, &config(&args));
    write_results(&args.out, &results, &lines)?;
    emit(&format!("{}\n", serde_json::to_string_pretty(&results).map_err(runtime)?))
}

/// Runs `merge`: the union of the shards' sample lines (in sample order) and the results computed from them.
pub fn merge(args: MergeArgs) -> Result<(), CliError> {
    let frames = load_frames(&args.data)?;
    let all = runner::read_lines(&args.shards).map_err(runtime)?;
    let lines: Vec<Value> = runner::latest(&all).into_iter().cloned().collect();
    // Shards of one evaluation share their configuration; joining runs of different settings would average them.
    // A shard killed before writing results.json has no recorded configuration and is not compared.
    let configs: Vec<(PathBuf, Value)> = args
        .shards
        .iter()
        .filter_map(|d| {
            let text = std::fs::read_to_string(d.join("results.json")).ok()?;
            Some((d.clone(), serde_json::from_str::<Value>(&text).ok()?["config"].clone()))
        })
        .collect();
    if let Some((other, _)) = configs.iter().find(|(_, c)| *c != configs[0].1) {
        return Err(CliError::usage(
            format!("{} and {} ran with different configurations", configs[0].0.display(), other.display()),
            "merge only the shards of one evaluation (compare the `config` in their results.json)",
        ));
    }
    let config = configs.first().map_or(Value::Null, |(_, c)| c.clone());
    std::fs::create_dir_all(&args.out).map_err(|e| runtime(format!("{}: {e}", args.out.display())))?;
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = args.out.join(runner::SAMPLES);
    std::fs::write(&path, text).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    let results = runner::results(&lines, &frames, &config);
    write_results(&args.out, &results, &lines)?;
    emit(&format!("{}\n", serde_json::to_string_pretty(&results).map_err(runtime)?))
}
