//! `tokensieve score`: score predictions made by any system.
//! - `caption`: JSONL items `{"id", "prediction", "references": [...]}`; pycocoevalcap's Bleu_1..4, ROUGE_L, CIDEr.
//! - `drivelm`: the challenge's `output.json` against `test_eval.json` (`--data`), with an optional `--judge`.
//! - `nuscenes-qa`: JSONL `{"id": <question index>, "prediction"}` against the questions file (`--data`).
//! - `mcq`: JSONL `{"id", "prediction", "answer"[, "options"]}` under a named extractor (`--extractor`); `options`
//!   is the list of choice texts (the MMMU-style extractors match them) or just their number (default 4).

use super::{emit, CliError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokensieve::eval::caption::{score, CaptionItem};
use tokensieve::eval::judge::CommandJudge;
use tokensieve::eval::{drivelm, mcq, nuscenes_qa};

/// Arguments of `score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to score: `caption`, `drivelm`, `nuscenes-qa` or `mcq`.
    #[arg(long, value_parser = ["caption", "drivelm", "nuscenes-qa", "mcq"])]
    task: String,
    /// `mcq`: the answer extractor (see `tokensieve::eval::mcq::EXTRACTORS`).
    #[arg(long, default_value = "videomme_official")]
    extractor: String,
    /// `mcq`: seed of the extractors that fall back to a random option.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Predictions (see the task for the format).
    #[arg(long)]
    predictions: PathBuf,
    /// The dataset file with the references (`drivelm`: test_eval.json; `nuscenes-qa`: the questions file).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A judge command (reads the prompt on stdin, prints a score) for the DriveLM judge-scored parts.
    #[arg(long)]
    judge: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn read_json(path: &Path) -> Result<Value, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::runtime(format!("{}: {e}", path.display()), None))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display()), "the file must be JSON"))
}

fn data(args: &Args) -> Result<Value, CliError> {
    let path = args.data.as_deref().ok_or_else(|| {
        CliError::usage(
            format!("--task {} needs --data (the dataset file with the references)", args.task),
            "see `tokensieve score --help`",
        )
    })?;
    read_json(path)
}

fn run_drivelm(args: &Args) -> Result<(), CliError> {
    let hint = "expected DriveLM's test_eval.json schema, EM-VLM4AD's list or a DriveLM-CARLA folder";
    let frames = match args.data.as_deref() {
        Some(folder) if folder.is_dir() => {
            drivelm::load_path(folder).map_err(|e| CliError::usage(e.to_string(), hint))?
        }
        _ => drivelm::load(&data(args)?).map_err(|e| CliError::usage(e, hint))?,
    };
    let predictions = drivelm::load_predictions(&read_json(&args.predictions)?).map_err(|e| {
        CliError::usage(e, "expected the challenge's output.json: [{\"id\", \"question\", \"answer\"}]")
    })?;
    let judge = args.judge.clone().map(|command| CommandJudge { command });
    let scores =
        drivelm::evaluate(&frames, &predictions, judge.as_ref().map(|j| j as &dyn tokensieve::eval::judge::Judge));
    if args.json {
        return emit(&format!("{}\n", json!({"task": "drivelm", "scores": scores})));
    }
    let show = |v: Option<f64>| v.map_or("not scored".to_string(), |v| format!("{v:.4}"));
    let mut out = format!(
        "{} questions scored, {} removed by graph gating, {} without a prediction\n",
        scores.scored, scores.gated_out, scores.missing_predictions
    );
    out += &format!(
        "accuracy   {}\nchatgpt    {}\nmatch F1   {}\nmatch      {}\n",
        show(scores.accuracy),
        show(scores.chatgpt),
        show(scores.match_f1),
        show(scores.match_score)
    );
    for (k, v) in &scores.language {
        out += &format!("{k:<10} {v:.4}\n");
    }
    out += &format!("final      {}\n", show(scores.final_score));
    for n in &scores.not_scored {
        out += &format!("not scored: {n}\n");
    }
    emit(&out)
}

fn run_nuscenes(args: &Args) -> Result<(), CliError> {
    let questions =
        nuscenes_qa::load(&data(args)?).map_err(|e| CliError::usage(e, "expected NuScenes-QA's questions file"))?;
    let text = std::fs::read_to_string(&args.predictions)
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.predictions.display()), None))?;
    let mut predictions = vec![String::new(); questions.len()];
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| {
            CliError::usage(format!("{}:{}: {e}", args.predictions.display(), n + 1), "one JSON object per line")
        })?;
        let id = v["id"].as_u64().or_else(|| v["id"].as_str().and_then(|s| s.parse().ok()));
        match (id, v["prediction"].as_str()) {
            (Some(i), Some(p)) if (i as usize) < questions.len() => predictions[i as usize] = p.to_string(),
            _ => {
                return Err(CliError::usage(
                    format!(
                        "{}:{}: needs an id below {} and a prediction",
                        args.predictions.display(),
                        n + 1,
                        questions.len()
                    ),
                    "{\"id\": 0, \"prediction\": \"yes\"}",
                ))
            }
        }
    }
    let result = nuscenes_qa::evaluate(&questions, &predictions);
    if args.json {
        return emit(&format!(
            "{}\n",
            json!({"task": "nuscenes-qa", "normaliser": nuscenes_qa::NORMALISER, "accuracy": result})
        ));
    }
    let mut out = String::new();
    for (k, a) in &result {
        out += &format!("{k:<14} {}/{} = {:.2}\n", a.correct, a.total, a.value * 100.0);
    }
    emit(&out)
}

fn run_mcq(args: &Args) -> Result<(), CliError> {
    if !mcq::EXTRACTORS.contains(&args.extractor.as_str()) {
        return Err(CliError::usage(
            format!("unknown extractor `{}`", args.extractor),
            format!("known: {}", mcq::EXTRACTORS.join(", ")),
        ));
    }
    let text = std::fs::read_to_string(&args.predictions)
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.predictions.display()), None))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| {
            CliError::usage(format!("{}:{}: {e}", args.predictions.display(), n + 1), "one JSON object per line")
        })?;
        match (v["prediction"].as_str(), v["answer"].as_str()) {
            (Some(p), Some(a)) => {
                let options: Vec<String> = match &v["options"] {
                    Value::Array(texts) => texts.iter().map(|t| t.as_str().unwrap_or_default().to_string()).collect(),
                    n => vec![String::new(); n.as_u64().unwrap_or(4) as usize],
                };
                items.push((p.to_string(), a.to_string(), options))
            }
            _ => {
                return Err(CliError::usage(
                    format!("{}:{}: needs prediction and answer", args.predictions.display(), n + 1),
                    "{\"id\": \"q1\", \"prediction\": \"B\", \"answer\": \"B\"}",
                ))
            }
        }
    }
    let result =
        mcq::accuracy(&args.extractor, &items, args.seed).map_err(|e| CliError::usage(e, "see --extractor"))?;
    if args.json {
        emit(&format!("{}\n", json!({"task": "mcq", "result": result})))
    } else {
        emit(&format!(
            "{}: {}/{} = {:.4} ({} excluded by the extractor's rule)\n",
            result.extractor, result.correct, result.counted, result.accuracy, result.excluded
        ))
    }
}

pub fn run(args: Args) -> Result<(), CliError> {
    match args.task.as_str() {
        "drivelm" => return run_drivelm(&args),
        "nuscenes-qa" => return run_nuscenes(&args),
        "mcq" => return run_mcq(&args),
        _ => {}
    }
    let text = std::fs::read_to_string(&args.predictions)
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.predictions.display()), None))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let item: CaptionItem = serde_json::from_str(line).map_err(|e| {
            CliError::usage(
                format!("{}:{}: {e}", args.predictions.display(), n + 1),
                "each line must be {\"id\": ..., \"prediction\": ..., \"references\": [...]}",
            )
        })?;
        if item.references.is_empty() {
            return Err(CliError::usage(
                format!("{}:{}: item {} has no references", args.predictions.display(), n + 1, item.id),
                "give at least one reference per item",
            ));
        }
        items.push(item);
    }
    let scores = score(&items);
    if args.json {
        emit(&format!("{}\n", json!({"task": args.task, "items": items.len(), "metrics": scores.metrics})))
    } else {
        let mut out = format!("{} items\n", items.len());
        for (k, v) in &scores.metrics {
            out += &format!("{k:<8} {v:.6}\n");
        }
        emit(&out)
    }
}
