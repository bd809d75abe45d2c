//! Caption metrics against pycocoevalcap 1.2 (with its Java PTB tokenizer): 321 hand-made items (our own
//! driving-QA sentences plus edge cases: empty and punctuation-only predictions, contractions, numbers and units,
//! quotes, brackets, Unicode, tabs and newlines), and a randomised differential set of 4,037 token-level and 1,064
//! raw-text items in 28 corpora, compared per corpus and per item within 1e-9. Also DriveLM's coordinate match against
//! the challenge script. Fixtures: `tests/fixtures/make_caption_fixtures.py` (`make fixtures`).

use serde_json::Value;
use std::path::Path;
use tokensieve::eval::caption::{score, score_tokenized, CaptionItem};
use tokensieve::eval::ptb::tokenize_lines;

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
    let items = items();
    // As pycocoevalcap: the predictions in one call, all references in another, in item order.
    let predictions = tokenize_lines(&items.iter().map(|i| i.prediction.as_str()).collect::<Vec<_>>());
    let mut references =
        tokenize_lines(&items.iter().flat_map(|i| i.references.iter()).collect::<Vec<_>>()).into_iter();
    for (item, got) in items.iter().zip(predictions) {
        let want = tokens["predictions"][&item.id][0].as_str().unwrap();
        if got != want {
            mismatches.push(format!("{}: {:?} -> {got:?}, expected {want:?}", item.id, item.prediction));
        }
        for (r, want) in item.references.iter().zip(tokens["references"][&item.id].as_array().unwrap()) {
            let got = references.next().unwrap();
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

/// The randomised differential set (`random.json`, `make_caption_fixtures.py::random_sets`): corpora of 1 to 1,300
/// items with one to five references, repeated n-grams, empty hypotheses and references; pycocoevalcap's corpus and
/// per-item scores. `text` corpora are raw DriveLM-style text (casing, numbers, c-tags, punctuation-only answers)
/// that goes through our PTB port; `token` corpora are already tokenised strings fed to the metrics directly.
fn random_set() -> Value {
    serde_json::from_str(&fixture("random.json")).unwrap()
}

const TOLERANCE: f64 = 1e-9;

/// Compares one corpus; returns a line per mismatch.
fn compare(label: &str, want: &Value, ours: &tokensieve::eval::caption::CaptionScores) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in want["corpus"].as_object().unwrap() {
        let (w, g) = (value.as_f64().unwrap(), ours.metrics[name]);
        if (w - g).abs() > TOLERANCE {
            out.push(format!("{label} corpus {name}: ours {g} vs {w}"));
        }
    }
    let (rouge, cider) = (want["ROUGE_L"].as_array().unwrap(), want["CIDEr"].as_array().unwrap());
    assert_eq!(rouge.len(), ours.items.len(), "{label}: item count");
    assert_eq!(cider.len(), ours.items.len(), "{label}: item count");
    for (k, (_, r, c)) in ours.items.iter().enumerate() {
        let (wr, wc) = (rouge[k].as_f64().unwrap(), cider[k].as_f64().unwrap());
        if (wr - r).abs() > TOLERANCE {
            out.push(format!("{label} item {k} ROUGE_L: ours {r} vs {wr}"));
        }
        if (wc - c).abs() > TOLERANCE {
            out.push(format!("{label} item {k} CIDEr: ours {c} vs {wc}"));
        }
    }
    out
}

#[test]
fn random_token_corpora_equal_pycocoevalcap() {
    let set = random_set();
    let alphabet: Vec<char> = set["alphabet"].as_str().unwrap().chars().collect();
    let vocab: Vec<&str> = set["vocab"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let decode = |code: &Value| -> String {
        let words: Vec<&str> =
            code.as_str().unwrap().chars().map(|c| vocab[alphabet.iter().position(|&a| a == c).unwrap()]).collect();
        words.join(" ")
    };
    let (mut mismatches, mut items) = (Vec::new(), 0);
    for (k, corpus) in set["token_corpora"].as_array().unwrap().iter().enumerate() {
        let pairs: Vec<(String, Vec<String>)> = corpus["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|it| (decode(&it[0]), it[1].as_array().unwrap().iter().map(decode).collect()))
            .collect();
        let ids: Vec<String> = (0..pairs.len()).map(|i| i.to_string()).collect();
        items += pairs.len();
        mismatches.extend(compare(&format!("token corpus {k}"), corpus, &score_tokenized(&ids, &pairs)));
    }
    assert!(items > 4000, "the set holds {items} items");
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn random_text_corpora_equal_pycocoevalcap() {
    let set = random_set();
    let (mut mismatches, mut items) = (Vec::new(), 0);
    for (k, corpus) in set["text_corpora"].as_array().unwrap().iter().enumerate() {
        let raw: Vec<CaptionItem> = corpus["items"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, it)| CaptionItem {
                id: i.to_string(),
                prediction: it[0].as_str().unwrap().into(),
                references: it[1].as_array().unwrap().iter().map(|r| r.as_str().unwrap().into()).collect(),
            })
            .collect();
        items += raw.len();
        mismatches.extend(compare(&format!("text corpus {k}"), corpus, &score(&raw)));
    }
    assert!(items > 1000, "the set holds {items} items");
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

/// DriveLM's coordinate match against a transcription of the challenge's `match_result` (OpenDriveLab/DriveLM
/// `challenge/evaluation.py`) on 400 seeded answer / ground-truth pairs (`drivelm_match.json`).
#[test]
fn drivelm_match_equals_the_challenge_script() {
    let set: Value = serde_json::from_str(&fixture("drivelm_match.json")).unwrap();
    let mut mismatches = Vec::new();
    for (k, pair) in set["pairs"].as_array().unwrap().iter().enumerate() {
        let (answer, truth) = (pair["answer"].as_str().unwrap(), pair["truth"].as_str().unwrap());
        let (matched, f1) = tokensieve::eval::drivelm::match_points(answer, truth);
        let want: Vec<(f64, f64)> = pair["matched"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        let want_f1 = pair["F1"].as_f64().unwrap();
        if matched != want || (f1 - want_f1).abs() > 1e-12 {
            mismatches.push(format!("{k}: {answer:?} vs {truth:?}: ours {matched:?} {f1}, script {want:?} {want_f1}"));
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
