//! `tokensieve eval` for DriveLM: answers every question of a test file with the pipeline, one JSON line per
//! sample appended and flushed as it finishes (so a killed run loses nothing and `--resume` skips what is done),
//! deterministic sharding by sample index, and `results.json` (configuration, its hash, git revision, scores and the
//! efficiency summary) computed from the sample lines alone, so merging shard outputs gives the same result as one
//! run.
//!
//! Images: DriveLM paths such as `../nuscenes/samples/CAM_FRONT/x.jpg` are resolved against the data root with the
//! leading `../` removed; the six cameras go to the model in nuScenes order, one frame each. A missing or unreadable
//! image is recorded as the sample's error and the run goes on; its questions then count as unanswered (wrong) when the
//! key frame is scored, as the challenge scores a missing prediction.

use super::drivelm::{self, KeyFrame};
use crate::pipeline::video_qa::{QaOptions, VideoQa};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokensieve_video::{load_image_native, NUSCENES_CAMERAS};

/// Name of the per-sample file inside an output folder.
pub const SAMPLES: &str = "samples_drivelm.jsonl";

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

/// One question to answer, in dataset order.
struct Sample<'a> {
    index: usize,
    frame: &'a KeyFrame,
    qa: &'a drivelm::DriveQa,
}

fn samples(frames: &[KeyFrame]) -> Vec<Sample<'_>> {
    frames
        .iter()
        .flat_map(|f| f.questions.iter().map(move |qa| (f, qa)))
        .enumerate()
        .map(|(index, (frame, qa))| Sample { index, frame, qa })
        .collect()
}

/// Ids answered in `dir`'s sample file. Samples that ended in an error are not finished: `--resume` tries them again
/// (the images may have been restored), and the newer line wins (see [`latest`]).
pub fn finished(dir: &Path) -> HashSet<String> {
    std::fs::read_to_string(dir.join(SAMPLES))
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
fn drop_partial_line(path: &Path) -> Result<(), String> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(()) };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.set_len(keep as u64).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the model over the test file; returns how many samples this call answered.
#[allow(clippy::too_many_arguments)]
pub fn run(
    qa: &VideoQa,
    frames: &[KeyFrame],
    data_root: &Path,
    opts: &QaOptions,
    out: &Path,
    limit: Option<usize>,
    shard: Shard,
    resume: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let done = if resume { finished(out) } else { HashSet::new() };
    if !resume && out.join(SAMPLES).exists() {
        std::fs::remove_file(out.join(SAMPLES)).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    if resume {
        drop_partial_line(&out.join(SAMPLES))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join(SAMPLES))
        .map_err(|e| format!("{}: {e}", out.join(SAMPLES).display()))?;
    let todo: Vec<Sample> = samples(frames)
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .filter(|s| s.index % shard.count == shard.index && !done.contains(&s.qa.id))
        .collect();
    let total = todo.len();
    for (n, s) in todo.into_iter().enumerate() {
        let mut line = json!({"id": s.qa.id, "index": s.index, "question": s.qa.question, "target": s.qa.answer, "tags": s.qa.tags});
        let images: Result<Vec<_>, String> = NUSCENES_CAMERAS
            .iter()
            .filter_map(|cam| s.frame.images.get(*cam))
            .map(|p| {
                let path: PathBuf = data_root.join(p.trim_start_matches("../"));
                load_image_native(&path).map_err(|e| e.to_string())
            })
            .collect();
        match images
            .and_then(|imgs| if imgs.is_empty() { Err("the key frame has no camera image".into()) } else { Ok(imgs) })
        {
            Err(e) => line["error"] = json!(e),
            Ok(imgs) => match qa.ask(&imgs, &s.qa.question, opts) {
                Ok((answer, record)) => {
                    line["prediction"] = json!(answer);
                    line["record"] = json!(record);
                }
                Err(e) => line["error"] = json!(e.to_string()),
            },
        }
        writeln!(file, "{line}")
            .and_then(|_| file.flush())
            .map_err(|e| format!("{}: {e}", out.join(SAMPLES).display()))?;
        progress(n + 1, total);
    }
    Ok(total)
}

/// `results.json` from sample lines (any order; for an id written twice the last line counts): DriveLM scores of
/// the answered samples and the efficiency means.
pub fn results(lines: &[Value], frames: &[KeyFrame], config: &Value) -> Value {
    let by_id: BTreeMap<String, &Value> =
        latest(lines).into_iter().filter_map(|l| Some((l["id"].as_str()?.to_string(), l))).collect();
    let predictions: HashMap<String, String> =
        by_id.iter().filter_map(|(id, l)| l["prediction"].as_str().map(|p| (id.clone(), p.to_string()))).collect();
    let answered: HashSet<&String> = by_id.keys().collect();
    // Score only the key frames whose questions were all attempted (a partial run scores what it covers).
    let covered: Vec<KeyFrame> =
        frames.iter().filter(|f| f.questions.iter().all(|q| answered.contains(&q.id))).cloned().collect();
    let scores = drivelm::evaluate(&covered, &predictions, None);
    let mean = |key: &dyn Fn(&Value) -> Option<f64>| {
        let v: Vec<f64> = by_id.values().filter_map(|l| key(l)).collect();
        if v.is_empty() {
            Value::Null
        } else {
            json!(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let errors = by_id.values().filter(|l| l.get("error").is_some()).count();
    let text = config.to_string();
    let hash = text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    // The checkout this binary was built from (not the caller's working directory, which may be another repo).
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    json!({
        "task": "drivelm",
        // DriveLM's accuracy is the challenge's raw string equality, so no answer extractor is involved.
        "scorer": "DriveLM challenge evaluation.py (accuracy: raw equality; match: 16 px greedy L1, F1; COCO language)",
        "config": config,
        "config_hash": format!("{hash:016x}"),
        "git_revision": revision,
        "tokensieve_version": env!("CARGO_PKG_VERSION"),
        "samples": by_id.len(),
        "errors": errors,
        "key_frames_scored": covered.len(),
        "scores": scores,
        "efficiency": {
            "mean_visual_tokens": mean(&|l| l["record"]["visual_tokens"].as_array()?.last()?[1].as_f64()),
            "mean_prefill_tokens": mean(&|l| l["record"]["prefill_tokens"].as_f64()),
            "mean_llm_tflops": mean(&|l| Some(2.0 * l["record"]["llm_macs_swiglu"].as_f64()? / 1e12)),
            "mean_ttft_ms": mean(&|l| l["record"]["ttft_ms"].as_f64()),
        },
    })
}

/// The answered samples in the challenge's submission format (`[{"id", "question", "answer"}]`, sample order), which
/// `tokensieve score --task drivelm --judge ...` and the official `evaluation.py` read.
pub fn challenge_output(lines: &[Value]) -> Value {
    Value::Array(
        latest(lines)
            .into_iter()
            .filter(|l| l["prediction"].is_string())
            .map(|l| json!({"id": l["id"], "question": l["question"], "answer": l["prediction"]}))
            .collect(),
    )
}

/// Every sample line of the given output folders.
pub fn read_lines(dirs: &[PathBuf]) -> Result<Vec<Value>, String> {
    let mut lines = Vec::new();
    for d in dirs {
        let path = d.join(SAMPLES);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            lines.push(serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?);
        }
    }
    Ok(lines)
}
