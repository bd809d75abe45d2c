//! `tokensieve score`: score predictions made by any system. `--task caption` reads JSONL items
//! `{"id", "prediction", "references": [...]}` and reports pycocoevalcap's Bleu_1..4, ROUGE_L and CIDEr.

use super::{emit, CliError};
use serde_json::json;
use std::path::PathBuf;
use tokensieve::eval::caption::{score, CaptionItem};

/// Arguments of `score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to score: `caption` (COCO caption metrics over free-form answers).
    #[arg(long, value_parser = ["caption"])]
    task: String,
    /// Predictions, one JSON object per line.
    #[arg(long)]
    predictions: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<(), CliError> {
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
