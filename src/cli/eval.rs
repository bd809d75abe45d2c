//! `tokensieve eval` and `tokensieve merge`: answer a benchmark with the pipeline (one flushed JSON line per sample,
//! `--resume`, `--shard i/n`) and write `results.json` plus the file the official scorer reads (DriveLM's
//! `output.json`, LingoQA's `predictions.csv`); `merge` joins shard folders into one result that equals a single
//! run's.

use super::{emit, CliError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokensieve::eval::error::EvalError;
use tokensieve::eval::judge::CommandJudge;
use tokensieve::eval::runner::{self, Plan, Shard};
use tokensieve::eval::task::{Dataset, Scoring, TASKS};

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The benchmark: drivelm, em-vlm4ad, nuscenes-qa, lingoqa, videomme, mlvu, longvideobench, egoschema or nextqa.
    #[arg(long, value_parser = TASKS)]
    task: String,
    /// The dataset file (JSON, JSONL, CSV or parquet as the benchmark publishes it; a DriveLM-CARLA or MLVU folder).
    #[arg(long)]
    data: PathBuf,
    /// Where the media lie: DriveLM's and LingoQA's image paths are relative to it, NuScenes-QA needs the nuScenes
    /// root (samples/ and v1.0-*/), the video benchmarks their video folder.
    #[arg(long)]
    data_root: PathBuf,
    /// Frame sampler of the videos `name:key=value,...` (uniform, uniform-interior, fps, dcode, or
    /// `f2c:candidates=64,anchors=8,budget=6272` with `--relevance clip:MODEL`, scoring frames against each
    /// sample's prompt); the default is lmms-eval's uniform `linspace(0, N-1, frames)`.
    #[arg(long, default_value = "uniform")]
    sampler: String,
    /// Frames to sample (for samplers with a `frames` parameter that the spec does not set).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    #[command(flatten)]
    scoring: ScoringFlags,
    /// A `llava`/`llava_onevision`/`qwen2_5_vl`/`qwen3_vl` directory or a Hugging Face id (with `--backend onnx`: an
    /// export folder).
    #[arg(long, value_parser = super::model_arg)]
    model: PathBuf,
    #[command(flatten)]
    backend: super::BackendFlags,
    #[command(flatten)]
    pruning: super::ask::PruningFlags,
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Output folder (`samples_<task>.jsonl`, `results.json`).
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

/// How answers are scored (shared by `eval` and `merge`).
#[derive(Debug, clap::Args)]
pub struct ScoringFlags {
    /// Multiple-choice answer extractor (default: the benchmark's; see `tokensieve::eval::mcq::EXTRACTORS`).
    #[arg(long)]
    extractor: Option<String>,
    /// Seed of the extractors that fall back to a random option.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Judge command (prompt on stdin, score on stdout) for DriveLM's judge parts and Lingo-Judge.
    #[arg(long)]
    judge: Option<String>,
    /// `em-vlm4ad`: answers longer than this many characters are dropped before scoring, as its eval.py does.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
}

impl ScoringFlags {
    fn scoring(&self) -> Result<Scoring, CliError> {
        if let Some(e) = &self.extractor {
            if !tokensieve::eval::mcq::EXTRACTORS.contains(&e.as_str()) {
                return Err(CliError::usage(
                    format!("unknown extractor `{e}`"),
                    format!("known: {}", tokensieve::eval::mcq::EXTRACTORS.join(", ")),
                ));
            }
        }
        Ok(Scoring {
            extractor: self.extractor.clone(),
            seed: self.seed,
            judge: self.judge.clone().map(|command| CommandJudge { command }),
            max_len: self.max_len,
        })
    }
}

/// Arguments of `merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The benchmark the shards ran.
    #[arg(long, value_parser = TASKS)]
    task: String,
    /// The benchmark's dataset file (the same one the shards ran on).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    scoring: ScoringFlags,
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

/// A dataset, media or setting problem is the user's to fix (exit 2); the rest is a runtime failure.
fn eval_error(e: EvalError) -> CliError {
    match e {
        EvalError::Io { .. } => runtime(e),
        EvalError::Format { .. } | EvalError::Record { .. } => {
            CliError::usage(e.to_string(), "check --task, --data and --data-root (see `tokensieve eval --help`)")
        }
        EvalError::Setting(m) => CliError::usage(m, "see `tokensieve eval --help`"),
    }
}

/// Writes `results.json` and the official scorer's input file, if the task has one.
fn write_results(out: &Path, dataset: &Dataset, results: &Value, lines: &[Value]) -> Result<(), CliError> {
    let latest = runner::latest(lines);
    let mut files = vec![("results.json", serde_json::to_string_pretty(results).map_err(runtime)? + "\n")];
    files.extend(dataset.submission(&latest));
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
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
        "relevance": args.pruning.relevance,
        "backend": args.backend.backend,
        "dtype": args.backend.dtype,
        "precision": args.backend.precision,
        "max_new_tokens": args.max_new_tokens,
        "limit": args.limit,
        "frames": args.frames,
        "sampler": super::ask::with_frames(&args.sampler, args.frames),
        "extractor": args.scoring.extractor,
        "seed": args.scoring.seed,
    })
}

/// Runs `eval`.
pub fn run(args: Args) -> Result<(), CliError> {
    let mut opts = super::ask::qa_options(&args.pruning, args.max_new_tokens)?;
    opts.relevance = super::ask::relevance_provider(&args.pruning.relevance, None)?;
    let scoring = args.scoring.scoring()?;
    if args.frames == 0 {
        return Err(CliError::usage("--frames 0 samples nothing", "give at least one frame, for example --frames 8"));
    }
    let dataset = Dataset::load(&args.task, &args.data).map_err(eval_error)?;
    let samples = dataset.samples(&args.data_root).map_err(eval_error)?;
    let choice = args.backend.choice(None)?;
    args.backend.check_model(&args.model)?;
    let qa = args.backend.load(&args.model, choice).map_err(runtime)?;
    qa.check_options(&opts).map_err(|e| CliError::usage(e.to_string(), "see `tokensieve eval --help`"))?;
    let spec = super::ask::with_frames(&args.sampler, args.frames);
    let sampler = tokensieve::pipeline::sampler::Sampler::from_spec(&spec)
        .map_err(|e| CliError::usage(e.to_string(), "for example --sampler uniform:frames=8 or --sampler fps:fps=1"))?;
    let plan = Plan { limit: args.limit, shard: args.shard, resume: args.resume, sampler };
    let bar = super::progress_bar(0, "samples");
    runner::run(&qa, &samples, dataset.task(), &opts, &args.out, plan, |n, total| {
        bar.set_length(total as u64);
        bar.set_position(n as u64);
    })
    .map_err(eval_error)?;
    bar.finish_and_clear();
    let lines = runner::read_lines(std::slice::from_ref(&args.out), dataset.task()).map_err(eval_error)?;
    let results = runner::results(&lines, &dataset, &config(&args), &scoring).map_err(eval_error)?;
    write_results(&args.out, &dataset, &results, &lines)?;
    emit(&format!("{}\n", serde_json::to_string_pretty(&results).map_err(runtime)?))
}

/// Runs `merge`: the union of the shards' sample lines (in sample order) and the results computed from them.
pub fn merge(args: MergeArgs) -> Result<(), CliError> {
    let scoring = args.scoring.scoring()?;
    let dataset = Dataset::load(&args.task, &args.data).map_err(eval_error)?;
    let all = runner::read_lines(&args.shards, dataset.task()).map_err(eval_error)?;
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
    let path = args.out.join(runner::samples_file(dataset.task()));
    std::fs::write(&path, text).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    let results = runner::results(&lines, &dataset, &config, &scoring).map_err(eval_error)?;
    write_results(&args.out, &dataset, &results, &lines)?;
    emit(&format!("{}\n", serde_json::to_string_pretty(&results).map_err(runtime)?))
}
