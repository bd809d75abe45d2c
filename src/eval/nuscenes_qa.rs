//! NuScenes-QA accuracy by question type and hop count (EVAL.md §1.4, §4.2).
//!
//! The official scorer compares `str(gt) == pred` with `pred` from the closed 30-answer vocabulary and reports
//! `Overall`, each `template_type` and each `template_type_num_hop` as `correct / total`. A generative model needs a
//! mapping into that vocabulary; none is official, so the normaliser is named and versioned: `nuscenesqa_v1`
//! lower-cases, strips punctuation and surrounding whitespace, maps `zero`..`ten` to digits, and accepts the result
//! only if it is a vocabulary word (anything else counts as wrong).

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The closed answer vocabulary.
pub const VOCABULARY: [&str; 30] = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "no",
    "yes",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction vehicle",
    "motorcycle",
    "moving",
    "not standing",
    "parked",
    "pedestrian",
    "standing",
    "stopped",
    "traffic cone",
    "trailer",
    "truck",
    "with rider",
    "without rider",
];

/// Name of the normaliser, recorded with every result.
pub const NORMALISER: &str = "nuscenesqa_v1";

/// One question.
#[derive(Debug, Clone, PartialEq)]
pub struct NuScenesQuestion {
    /// nuScenes key-frame token.
    pub sample_token: String,
    /// The question.
    pub question: String,
    /// The vocabulary answer.
    pub answer: String,
    /// 0 or 1.
    pub num_hop: u64,
    /// exist, count, object, status or comparison.
    pub template_type: String,
}

/// Reads `NuScenes_{train,val}_questions.json` (`{"questions": [...]}`).
pub fn load(json: &Value) -> Result<Vec<NuScenesQuestion>, String> {
    let list = json["questions"].as_array().ok_or("expected {\"questions\": [...]}")?;
    list.iter()
        .enumerate()
        .map(|(i, q)| {
            let s = |k: &str| q[k].as_str().map(str::to_string).ok_or_else(|| format!("question {i}: no {k}"));
            let answer = match &q["answer"] {
                Value::String(a) => a.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(format!("question {i}: no answer")),
            };
            Ok(NuScenesQuestion {
                sample_token: s("sample_token")?,
                question: s("question")?,
                answer,
                num_hop: q["num_hop"].as_u64().ok_or_else(|| format!("question {i}: no num_hop"))?,
                template_type: s("template_type")?,
            })
        })
        .collect()
}

/// Maps a free-form reply into the vocabulary (`nuscenesqa_v1`), or `None`.
pub fn normalise(reply: &str) -> Option<&'static str> {
    let cleaned: String = reply.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let numbers = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
    let joined = words
        .iter()
        .map(|w| numbers.iter().position(|n| n == w).map_or(w.to_string(), |i| i.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    VOCABULARY.iter().copied().find(|v| *v == joined)
}

/// `correct / total` of one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    /// Correct answers.
    pub correct: usize,
    /// Questions.
    pub total: usize,
    /// `correct / total` (0 for an empty group).
    pub value: f64,
}

/// Accuracy overall, per template type and per `type_hop`, for predictions aligned with `questions`.
pub fn evaluate(questions: &[NuScenesQuestion], predictions: &[String]) -> BTreeMap<String, Accuracy> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (q, p) in questions.iter().zip(predictions) {
        let correct = usize::from(normalise(p) == Some(q.answer.as_str()));
        for key in ["Overall".to_string(), q.template_type.clone(), format!("{}_{}", q.template_type, q.num_hop)] {
            let e = counts.entry(key).or_insert((0, 0));
            e.0 += correct;
            e.1 += 1;
        }
    }
    counts
        .into_iter()
        .map(|(k, (c, t))| {
            (k, Accuracy { correct: c, total: t, value: if t == 0 { 0.0 } else { c as f64 / t as f64 } })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normaliser_maps_replies_into_the_vocabulary() {
        assert_eq!(normalise("Yes."), Some("yes"));
        assert_eq!(normalise("  Two "), Some("2"));
        assert_eq!(normalise("Construction vehicle!"), Some("construction vehicle"));
        assert_eq!(normalise("There are two cars."), None);
        assert_eq!(normalise(""), None);
    }

    #[test]
    fn accuracy_by_type_and_hop() {
        let data = serde_json::json!({"questions": [
            {"sample_token": "t1", "question": "Are there cars?", "answer": "yes", "num_hop": 0, "template_type": "exist"},
            {"sample_token": "t1", "question": "How many trucks?", "answer": "2", "num_hop": 1, "template_type": "count"},
            {"sample_token": "t2", "question": "How many buses?", "answer": "0", "num_hop": 0, "template_type": "count"}
        ]});
        let qs = load(&data).unwrap();
        let r = evaluate(&qs, &["Yes".into(), "two".into(), "one".into()]);
        assert_eq!(r["Overall"], Accuracy { correct: 2, total: 3, value: 2.0 / 3.0 });
        assert_eq!(r["count"].correct, 1);
        assert_eq!(r["count_1"].value, 1.0);
        assert_eq!(r["count_0"].value, 0.0);
        assert!(load(&serde_json::json!({"questions": [{"question": "?"}]})).is_err());
    }
}
