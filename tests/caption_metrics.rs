//! Caption metrics against pycocoevalcap 1.2 (with its Java PTB tokenizer) on 316 items: our own driving-QA
//! sentences plus edge cases (empty and punctuation-only predictions, contractions, numbers and units, quotes,
//! brackets, Unicode, tabs and newlines). Fixtures: `tests/fixtures/make_caption_fixtures.py`.

use serde_json::Value;
use std::path::Path;
use tokensieve::eval::caption::{score, score_tokenized, CaptionItem};
use tokensieve::eval::ptb::tokenize;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/caption").join(name)).unwrap()
}

fn items() -> Vec<CaptionItem> {
    fixture("predictions.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn tokens_equal_the_stanford_tokenizer() {
    let tokens: Value = serde_json::from_str(&fixture("tokens.json")).unwrap();
    let mut mismatches = Vec::new();
    for item in items() {
        let want = tokens["predictions"][&item.id][0].as_str().unwrap();
        let got = tokenize(&item.prediction);
        if got != want {
            mismatches.push(format!("{}: {:?} -> {got:?}, expected {want:?}", item.id, item.prediction));
        }
        for (r, want) in item.references.iter().zip(tokens["references"][&item.id].as_array().unwrap()) {
            let got = tokenize(r);
            if got != want.as_str().unwrap() {
                mismatches.push(format!("{}: {r:?} -> {got:?}, expected {want}", item.id));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn metrics_on_the_reference_tokens_equal_pycocoevalcap() {
    let tokens: Value = serde_json::from_str(&fixture("tokens.json")).unwrap();
    let scores: Value = serde_json::from_str(&fixture("scores.json")).unwrap();
    let items = items();
    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let pairs: Vec<(String, Vec<String>)> = ids
        .iter()
        .map(|id| {
            let hyp = tokens["predictions"][id][0].as_str().unwrap().to_string();
            let refs =
                tokens["references"][id].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (hyp, refs)
        })
        .collect();
    let ours = score_tokenized(&ids, &pairs);
    for (name, value) in scores["corpus"].as_object().unwrap() {
        let want = value.as_f64().unwrap();
        assert!((ours.metrics[name] - want).abs() <= 1e-6, "{name}: {} vs {want}", ours.metrics[name]);
    }
    for (id, rouge, cider) in &ours.items {
        let want = &scores["items"][id];
        assert!((rouge - want["ROUGE_L"].as_f64().unwrap()).abs() <= 1e-6, "{id} ROUGE_L");
        assert!((cider - want["CIDEr"].as_f64().unwrap()).abs() <= 1e-6, "{id} CIDEr");
    }
}

#[test]
fn raw_text_scores_equal_pycocoevalcap() {
    let scores: Value = serde_json::from_str(&fixture("scores.json")).unwrap();
    let ours = score(&items());
    for (name, value) in scores["corpus"].as_object().unwrap() {
        let want = value.as_f64().unwrap();
        assert!((ours.metrics[name] - want).abs() <= 1e-6, "{name}: {} vs {want}", ours.metrics[name]);
    }
}
