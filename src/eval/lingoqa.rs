//! LingoQA (wayveai/LingoQA, EVAL.md §1.5, §4.3): front-camera clips of London driving, free-text questions, two
//! human references each. Loads `evaluation/val.parquet` (or the same rows as JSON/JSONL), whose 1,000 rows are
//! 500 questions x 2 references, grouped by `(question_id, segment_id, question)` as the official `evaluate.py`
//! does; writes `predictions.csv` (`question_id,segment_id,answer`) for the official scorer; scores with
//! Lingo-Judge through a judge command, and always with the COCO caption metrics against both references.
//!
//! Lingo-Judge is a DeBERTa classifier whose weights are not reachable offline, so it is a command \[project\]: per
//! reference it receives `\nQuestion: {question}\nAnswer: {reference}\nStudent: {prediction}` (reference and
//! prediction lower-cased and stripped, as the official judge does; its tokenizer adds the CLS token and truncates
//! at 128 tokens) and prints its logit. A prediction is correct iff the largest logit over the references is > 0;
//! the benchmark value is the percentage correct. Without a judge the result says it was not scored.

use super::caption::{self, CaptionItem};
use super::error::EvalError;
use super::judge::Judge;
use super::table::{read_rows, text};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One question about one clip, with its references.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LingoItem {
    /// The dataset's question id.
    pub question_id: String,
    /// The clip.
    pub segment_id: String,
    /// The question.
    pub question: String,
    /// The human answers (two in the evaluation set).
    pub references: Vec<String>,
    /// The clip's frames, relative to the data root, in order.
    pub images: Vec<String>,
}

impl LingoItem {
    /// The sample id used in run outputs.
    pub fn id(&self) -> String {
        format!("{}/{}", self.segment_id, self.question_id)
    }
}

/// Loads the evaluation rows and groups the references of each question, in first-seen order.
pub fn load(path: &Path) -> Result<Vec<LingoItem>, EvalError> {
    let rows = read_rows(path)?;
    let mut items: Vec<LingoItem> = Vec::new();
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let field = |k: &str| {
            text(row, k).ok_or_else(|| EvalError::Record {
                path: path.display().to_string(),
                record: i.to_string(),
                reason: format!("no `{k}`"),
            })
        };
        let key = (field("question_id")?, field("segment_id")?, field("question")?);
        let answer = field("answer")?;
        match index.get(&key) {
            Some(&at) => items[at].references.push(answer),
            None => {
                let images: Vec<String> = match row.get("images") {
                    Some(serde_json::Value::Array(a)) => {
                        a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                    }
                    Some(serde_json::Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| vec![s.clone()]),
                    _ => Vec::new(),
                };
                index.insert(key.clone(), items.len());
                items.push(LingoItem {
                    question_id: key.0,
                    segment_id: key.1,
                    question: key.2,
                    references: vec![answer],
                    images,
                });
            }
        }
    }
    Ok(items)
}

/// The text Lingo-Judge classifies for one reference.
pub fn judge_input(question: &str, reference: &str, prediction: &str) -> String {
    format!(
        "\nQuestion: {question}\nAnswer: {}\nStudent: {}",
        reference.to_lowercase().trim(),
        prediction.to_lowercase().trim()
    )
}

/// LingoQA scores of the answered questions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LingoScores {
    /// Questions with a prediction.
    pub answered: usize,
    /// Questions without one (failed samples or not run).
    pub without_prediction: usize,
    /// Lingo-Judge accuracy in percent over the judged questions; `None` without a judge.
    pub lingo_judge: Option<f64>,
    /// Questions the judge scored.
    pub judged: usize,
    /// Judge failures (`question id: reason`), left out of the accuracy.
    pub judge_errors: Vec<String>,
    /// COCO metrics (pycocoevalcap's names) against both references.
    pub language: BTreeMap<String, f64>,
    /// Parts not scored, and why.
    pub not_scored: Vec<String>,
}

/// Scores `predictions` (sample id -> answer).
pub fn evaluate(items: &[LingoItem], predictions: &HashMap<String, String>, judge: Option<&dyn Judge>) -> LingoScores {
    let answered: Vec<(&LingoItem, &String)> =
        items.iter().filter_map(|i| predictions.get(&i.id()).map(|p| (i, p))).collect();
    let captions: Vec<CaptionItem> = answered
        .iter()
        .map(|(i, p)| CaptionItem { id: i.id(), prediction: p.to_string(), references: i.references.clone() })
        .collect();
    let language = if captions.is_empty() { BTreeMap::new() } else { caption::score(&captions).metrics };
    let mut not_scored = Vec::new();
    let (mut correct, mut judged, mut judge_errors) = (0usize, 0usize, Vec::new());
    match judge {
        None => not_scored.push("lingo_judge: no judge command (give --judge)".to_string()),
        Some(j) => {
            for (item, prediction) in &answered {
                let logits: Result<Vec<f64>, String> =
                    item.references.iter().map(|r| j.score(&judge_input(&item.question, r, prediction))).collect();
                match logits {
                    Ok(l) => {
                        judged += 1;
                        correct += usize::from(l.iter().copied().fold(f64::NEG_INFINITY, f64::max) > 0.0);
                    }
                    Err(e) => judge_errors.push(format!("{}: {e}", item.id())),
                }
            }
        }
    }
    LingoScores {
        answered: answered.len(),
        without_prediction: items.len() - answered.len(),
        lingo_judge: (judge.is_some() && judged > 0).then(|| 100.0 * correct as f64 / judged as f64),
        judged,
        judge_errors,
        language,
        not_scored,
    }
}

/// `predictions.csv` as the official `evaluate.py` reads it (every answered question; quoted where needed).
pub fn predictions_csv(items: &[LingoItem], predictions: &HashMap<String, String>) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("question_id,segment_id,answer\n");
    for i in items {
        if let Some(p) = predictions.get(&i.id()) {
            out += &format!("{},{},{}\n", quote(&i.question_id), quote(&i.segment_id), quote(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Logit(f64);
    impl Judge for Logit {
        fn score(&self, prompt: &str) -> Result<f64, String> {
            // Positive only for the reference that mentions the light.
            Ok(if prompt.contains("light") { self.0 } else { -self.0 })
        }
    }

    fn items() -> Vec<LingoItem> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("val.jsonl");
        let rows = [
            json!({"question_id": "q1", "segment_id": "s1", "question": "Why stop?", "answer": "Red light.",
                   "images": ["images/val/s1/0.jpg", "images/val/s1/1.jpg"]}),
            json!({"question_id": "q1", "segment_id": "s1", "question": "Why stop?", "answer": "The lights are red",
                   "images": ["images/val/s1/0.jpg", "images/val/s1/1.jpg"]}),
            json!({"question_id": "q2", "segment_id": "s1", "question": "Any cyclists?", "answer": "No.",
                   "images": ["images/val/s1/0.jpg"]}),
            json!({"question_id": "q2", "segment_id": "s1", "question": "Any cyclists?", "answer": "There are none.",
                   "images": ["images/val/s1/0.jpg"]}),
        ];
        std::fs::write(&p, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
        load(&p).unwrap()
    }

    #[test]
    fn rows_group_into_questions_with_two_references() {
        let it = items();
        assert_eq!(it.len(), 2);
        assert_eq!(it[0].references, ["Red light.", "The lights are red"]);
        assert_eq!(it[0].images.len(), 2);
        assert_eq!(it[1].id(), "s1/q2");
        assert_eq!(
            judge_input("Why stop?", " Red Light. ", "STOP"),
            "\nQuestion: Why stop?\nAnswer: red light.\nStudent: stop"
        );
    }

    #[test]
    fn the_published_parquet_layout_loads() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/eval/lingoqa_val.parquet"));
        let it = load(path).unwrap();
        assert_eq!(it.len(), 2);
        assert_eq!(it[0].references, ["Because the traffic light is red.", "The light ahead is red."]);
        assert_eq!(it[0].images, ["images/val/seg1/0.png", "images/val/seg1/1.png"]);
    }

    #[test]
    fn judge_takes_the_best_reference_and_absence_is_reported() {
        let it = items();
        let preds: HashMap<String, String> =
            [("s1/q1", "Because of the traffic light."), ("s1/q2", "yes, one, on the left")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let s = evaluate(&it, &preds, Some(&Logit(2.0)));
        // q1: one reference mentions the light -> max logit > 0; q2: none does.
        assert_eq!((s.judged, s.lingo_judge), (2, Some(50.0)));
        assert!(s.language.contains_key("CIDEr"));
        let s = evaluate(&it, &preds, None);
        assert_eq!(s.lingo_judge, None);
        assert!(s.not_scored[0].contains("lingo_judge"));
        let csv = predictions_csv(&it, &preds);
        assert_eq!(
            csv,
            "question_id,segment_id,answer\nq1,s1,Because of the traffic light.\nq2,s1,\"yes, one, on the left\"\n"
        );
    }
}
