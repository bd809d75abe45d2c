//! `tokensieve eval`: answers every sample of a task (see [`super::task`]) with the pipeline, one JSON line per
//! sample appended and flushed as it finishes (so a killed run loses nothing and `--resume` skips what is done),
//! deterministic sharding by sample index, and `results.json` (configuration, its hash, git revision, scores and the
//! efficiency summary) computed from the sample lines alone, so merging shard outputs gives the same result as one
//! run.
//!
//! A sample whose images or video are missing or unreadable is recorded with its error and the run goes on; the
//! scorers count it as unanswered (DriveLM scores a missing prediction as the challenge does, the others leave it out
//! and report how many there are).

use super::error::EvalError;
use super::task::{Dataset, Media, Sample, Scoring};
use crate::pipeline::builder::{self, LoadedMedia};
use crate::pipeline::engine::Engine;
use crate::pipeline::qa::QaOptions;
use crate::pipeline::sampler::Sampler;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the per-sample file of `task` inside an output folder.
pub fn samples_file(task: &str) -> String {
    format!("samples_{}.jsonl", task.replace('-', "_"))
}

/// `i/n`: this shard takes the samples whose index modulo `n` is `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard.
    pub index: usize,
    /// Shards in all.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("shard `{s}` is not i/n"))?;
        let (index, count): (usize, usize) =
            (i.parse().map_err(|_| format!("shard `{s}`"))?, n.parse().map_err(|_| format!("shard `{s}`"))?);
        if count == 0 || index >= count {
            return Err(format!("shard `{s}`: need 0 <= i < n"));
        }
        Ok(Shard { index, count })
    }
}

/// Ids answered in `dir`'s sample file. Samples that ended in an error are not finished: `--resume` tries them again
/// (the images may have been restored), and the newer line wins (see [`latest`]).
pub fn finished(dir: &Path, task: &str) -> HashSet<String> {
    std::fs::read_to_string(dir.join(samples_file(task)))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["prediction"].is_string())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

/// One line per sample id, the last written winning, in sample order.
pub fn latest(lines: &[Value]) -> Vec<&Value> {
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for l in lines {
        if let Some(id) = l["id"].as_str() {
            by_id.insert(id, l);
        }
    }
    let mut kept: Vec<&Value> = by_id.into_values().collect();
    kept.sort_by_key(|l| (l["index"].as_u64().unwrap_or(u64::MAX), l["id"].as_str().map(str::to_string)));
    kept
}

/// Cuts a last line without its newline (a run killed while writing it), so appended lines start on their own line.
fn drop_partial_line(path: &Path) -> Result<(), EvalError> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(()) };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| EvalError::io(path, e))?;
    file.set_len(keep as u64).map_err(|e| EvalError::io(path, e))
}

/// Which samples a call runs, and how videos are sampled.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Only the first N samples (dataset order, before sharding).
    pub limit: Option<usize>,
    /// This call's shard.
    pub shard: Shard,
    /// Keep the answered samples already in the output folder.
    pub resume: bool,
    /// The frame sampler of videos (`uniform:frames=8`, lmms-eval's `linspace(0, N-1, k)`, by default).
    pub sampler: Sampler,
}

/// Decodes a sample's media with the pipeline's loader (videos: the plan's sampler; F2C scores the candidates
/// against the sample's prompt, which holds the options of a multiple-choice question, as F2C's query does).
fn load_media(
    media: &Media,
    sampler: &Sampler,
    question: Option<builder::Question<'_>>,
) -> Result<LoadedMedia, String> {
    let media = match media {
        Media::Unavailable(why) => return Err(why.clone()),
        Media::Images(paths) => builder::Media::Images(paths.clone()),
        Media::Video(path) => builder::Media::Video(path.clone()),
    };
    builder::load_media(sampler, &media, question).map_err(|e| e.to_string())
}

/// Runs the model over `samples` into `out`; returns how many samples this call answered.
pub fn run(
    qa: &Engine,
    samples: &[Sample],
    task: &str,
    opts: &QaOptions,
    out: &Path,
    plan: Plan,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, EvalError> {
    std::fs::create_dir_all(out).map_err(|e| EvalError::io(out, e))?;
    let path = out.join(samples_file(task));
    let done = if plan.resume { finished(out, task) } else { HashSet::new() };
    if !plan.resume && path.exists() {
        std::fs::remove_file(&path).map_err(|e| EvalError::io(&path, e))?;
    }
    if plan.resume {
        drop_partial_line(&path)?;
    }
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| EvalError::io(&path, e))?;
    let todo: Vec<&Sample> = samples
        .iter()
        .take(plan.limit.unwrap_or(usize::MAX))
        .filter(|s| s.index % plan.shard.count == plan.shard.index && !done.contains(&s.id))
        .collect();
    let total = todo.len();
    let (mut written, mut attempted) = (0, 0);
    // F2C ranks each video's frames by the sample's prompt with the relevance provider, on the model's ladder.
    let ladder = match (plan.sampler.needs_question(), opts.relevance.as_deref()) {
        (true, Some(_)) => vec![qa.video_frame_rung().map_err(|e| EvalError::Setting(e.to_string()))?],
        (true, None) => {
            return Err(EvalError::Setting(
                builder::PipelineError::NeedsScorer { sampler: plan.sampler.name() }.to_string(),
            ))
        }
        (false, _) => Vec::new(),
    };
    let provider = opts.relevance.as_deref();
    // The next sample's media decodes on another thread while the model answers this one.
    let outcomes = crate::pipeline::overlap::overlapped(
        &todo,
        |s| load_media(&s.media, &plan.sampler, builder::question_for(&plan.sampler, provider, &ladder, &s.prompt)),
        |s, loaded| -> Result<(), EvalError> {
            // After a failed write the output file is unusable; the remaining samples are not answered.
            if written < attempted {
                return Ok(());
            }
            let mut line = json!({"id": s.id, "index": s.index, "prompt": s.prompt});
            if let Some(system) = &s.system {
                line["system"] = json!(system);
            }
            if let (Value::Object(l), Value::Object(f)) = (&mut line, &s.fields) {
                l.extend(f.clone());
            }
            match loaded {
                Err(e) => line["error"] = json!(e),
                Ok(m) => {
                    line["decode_ms"] = json!(m.decode_ms);
                    // Which frames the sampler chose and why (F2C's anchors and scores, D-CoDe's embedder).
                    if !m.indices.is_empty() {
                        line["frame_indices"] = json!(m.indices);
                    }
                    if let Some(note) = &m.sampler_note {
                        line["sampler_note"] = note.clone();
                    }
                    match qa.ask_streaming(&m.frames, m.kind, s.system.as_deref(), &s.prompt, opts, &mut |_| true) {
                        Ok((answer, record)) => {
                            line["prediction"] = json!(answer);
                            line["record"] = json!(record);
                        }
                        Err(e) => line["error"] = json!(e.to_string()),
                    }
                }
            }
            attempted += 1;
            writeln!(file, "{line}").and_then(|_| file.flush()).map_err(|e| EvalError::io(&path, e))?;
            written += 1;
            progress(written, total);
            Ok(())
        },
    );
    outcomes.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(total)
}

/// `results.json` from sample lines (any order; for an id written twice the last line counts): the task's scores of
/// the answered samples and the efficiency means.
pub fn results(lines: &[Value], dataset: &Dataset, config: &Value, scoring: &Scoring) -> Result<Value, EvalError> {
    let latest = latest(lines);
    let predictions: HashMap<String, String> = latest
        .iter()
        .filter_map(|l| Some((l["id"].as_str()?.to_string(), l["prediction"].as_str()?.to_string())))
        .collect();
    let attempted: HashSet<String> = latest.iter().filter_map(|l| Some(l["id"].as_str()?.to_string())).collect();
    let (scorer, scores) = dataset.score(&predictions, &attempted, scoring)?;
    let mean = |key: &dyn Fn(&Value) -> Option<f64>| {
        let v: Vec<f64> = latest.iter().filter_map(|l| key(l)).collect();
        if v.is_empty() {
            Value::Null
        } else {
            json!(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let errors = latest.iter().filter(|l| l.get("error").is_some()).count();
    let text = config.to_string();
    let hash = super::fnv1a(0, text.as_bytes());
    // The checkout this binary was built from (not the caller's working directory, which may be another repo).
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Ok(json!({
        "task": dataset.task(),
        "scorer": scorer,
        "config": config,
        "config_hash": format!("{hash:016x}"),
        "git_revision": revision,
        "tokensieve_version": env!("CARGO_PKG_VERSION"),
        "samples": latest.len(),
        "errors": errors,
        "scores": scores,
        "efficiency": {
            "mean_visual_tokens": mean(&|l| l["record"]["visual_tokens"].as_array()?.last()?[1].as_f64()),
            "mean_visual_tokens_in": mean(&|l| l["record"]["visual_tokens"].as_array()?.first()?[1].as_f64()),
            "mean_prefill_tokens": mean(&|l| l["record"]["prefill_tokens"].as_f64()),
            "mean_llm_tflops": mean(&|l| Some(2.0 * l["record"]["llm_macs_swiglu"].as_f64()? / 1e12)),
            "llm_flops_formula": "2 x SwiGLU/GQA-corrected prefill MACs (EVAL.md §7.2)",
            "mean_ttft_ms": mean(&|l| l["record"]["ttft_ms"].as_f64()),
            "mean_decode_ms": mean(&|l| l["decode_ms"].as_f64()),
        },
    }))
}

/// Every sample line of the given output folders.
pub fn read_lines(dirs: &[PathBuf], task: &str) -> Result<Vec<Value>, EvalError> {
    let mut lines = Vec::new();
    for d in dirs {
        let path = d.join(samples_file(task));
        let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
        for (n, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            lines.push(
                serde_json::from_str(l).map_err(|e| EvalError::format(format!("{}:{}", path.display(), n + 1), e))?,
            );
        }
    }
    Ok(lines)
}
