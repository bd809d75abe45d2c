//! Scoring free-form answers against references with the COCO caption metrics, from raw text: PTB tokenisation
//! ([`super::ptb`]) then BLEU-1..4, ROUGE-L and CIDEr-D, named as pycocoevalcap names them.
//!
//! Official code: salaniz/pycocoevalcap 1.2 `eval.py` `COCOEvalCap.evaluate` (PTB tokenisation of references and
//! predictions, then each scorer's `compute_score`). Deviation: METEOR and SPICE are not computed. pycocoevalcap
//! computes both in Java (`meteor/meteor-1.5.jar` with `paraphrase-en.gz`; SPICE with extra CoreNLP models), and
//! tokensieve reports them as not scored rather than reimplementing them (EVAL.md §3.5).

use super::{bleu::bleu, cider::cider_d, ptb::tokenize_lines, rouge::rouge_l};
use serde::{Deserialize, Serialize};

/// One prediction with its references (`tokensieve score --task caption` reads these as JSONL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionItem {
    /// Item id.
    pub id: String,
    /// The model's answer.
    pub prediction: String,
    /// One or more reference answers.
    pub references: Vec<String>,
}

/// Corpus scores (pycocoevalcap's names) and per-item ROUGE-L and CIDEr.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptionScores {
    /// `Bleu_1`..`Bleu_4`, `ROUGE_L`, `CIDEr`.
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Per item: `(id, ROUGE_L, CIDEr)`.
    pub items: Vec<(String, f64, f64)>,
}

/// Scores already-tokenised `(hypothesis, references)` pairs.
pub fn score_tokenized(ids: &[String], pairs: &[(String, Vec<String>)]) -> CaptionScores {
    let b = bleu(pairs);
    let rouge: Vec<f64> = pairs.iter().map(|(h, r)| rouge_l(h, r)).collect();
    let cider = cider_d(pairs);
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let mut metrics = std::collections::BTreeMap::new();
    for (k, v) in b.iter().enumerate() {
        metrics.insert(format!("Bleu_{}", k + 1), *v);
    }
    metrics.insert("ROUGE_L".into(), mean(&rouge));
    metrics.insert("CIDEr".into(), mean(&cider));
    let items = ids.iter().cloned().zip(rouge).zip(cider).map(|((id, r), c)| (id, r, c)).collect();
    CaptionScores { metrics, items }
}

/// Tokenises and scores raw items. As pycocoevalcap, the references are tokenised in one call (in item order) and
/// the predictions in another, so a caption's tokens can depend on how the next caption starts
/// ([`tokenize_lines`]).
pub fn score(items: &[CaptionItem]) -> CaptionScores {
    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let predictions = tokenize_lines(&items.iter().map(|i| i.prediction.as_str()).collect::<Vec<_>>());
    let mut references =
        tokenize_lines(&items.iter().flat_map(|i| i.references.iter()).collect::<Vec<_>>()).into_iter();
    let pairs: Vec<(String, Vec<String>)> = items
        .iter()
        .zip(predictions)
        .map(|(i, p)| (p, references.by_ref().take(i.references.len()).collect()))
        .collect();
    score_tokenized(&ids, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EVAL.md §3.6: pycocoevalcap's scores of three of our own sentences.
    #[test]
    fn the_golden_example() {
        let item = |id: &str, r: &str, p: &str| CaptionItem {
            id: id.into(),
            prediction: p.into(),
            references: vec![r.into()],
        };
        let items = [
            item("1", "There is a red car to the front of the ego car.", "There is a car in front of the ego car."),
            item("2", "The ego vehicle should keep going straight.", "The ego vehicle should go straight."),
            item("3", "Two pedestrians are crossing the road (slowly).", "Pedestrians are crossing."),
        ];
        let s = score(&items);
        let expect = [
            ("Bleu_1", 0.557156),
            ("Bleu_2", 0.488389),
            ("Bleu_3", 0.430846),
            ("Bleu_4", 0.349617),
            ("ROUGE_L", 0.674113),
            ("CIDEr", 3.973057),
        ];
        for (k, v) in expect {
            assert!((s.metrics[k] - v).abs() < 5e-7, "{k}: {} vs {v}", s.metrics[k]);
        }
        let per_item: Vec<f64> = s.items.iter().map(|i| i.2).collect();
        for (got, want) in per_item.iter().zip([5.024683, 4.634649, 2.259838]) {
            assert!((got - want).abs() < 5e-7, "{got} vs {want}");
        }
        assert_eq!(score(&items[..1]).metrics["CIDEr"], 0.0);
    }
}
