//! Every multiple-choice extractor against a Python transcription of the official function it names
//! (tests/fixtures/mcq/make_mcq_fixtures.py; the fixture holds 2,400 seeded realistic and adversarial replies and
//! the official outputs).
//!
//! Per reply the official side records what it compares with the answer (`pick`) and a verdict: right, wrong,
//! excluded, `E` (the official script raises on this reply and aborts; tokensieve counts the reply wrong) or `?`
//! (the official code took its `random.choice` fallback: Python's generator cannot be reproduced bit for bit
//! here, so only the branch is compared: tokensieve must take its random fallback too and draw one of the options).

use serde_json::Value;
use tokensieve::eval::mcq::{self, Verdict};
use tokensieve::pruners::primitives::SplitMix64;

struct Item {
    reply: String,
    options: Vec<String>,
    answer: usize,
}

fn load() -> (Vec<Item>, Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcq/mcq_official.json");
    let text = std::fs::read_to_string(path).expect("fixture present");
    let v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    let sets: Vec<Vec<String>> = serde_json::from_value(v["option_sets"].clone()).expect("option sets");
    let items = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|it| Item {
            reply: it["reply"].as_str().expect("reply").to_string(),
            options: sets[it["set"].as_u64().expect("set") as usize].clone(),
            answer: it["answer"].as_u64().expect("answer") as usize,
        })
        .collect();
    (items, v["results"].clone())
}

fn answer_for(extractor: &str, item: &Item) -> String {
    let letter = (b'A' + item.answer as u8) as char;
    match extractor {
        "mlvu_official" | "mvbench_official" | "langdc_mvbench" => format!("({letter}) {}", item.options[item.answer]),
        _ => letter.to_string(),
    }
}

#[test]
fn every_extractor_equals_its_official_function() {
    let (items, results) = load();
    assert_eq!(items.len(), 2400);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for extractor in mcq::EXTRACTORS {
        let official = &results[extractor];
        let verdicts: Vec<char> = official["verdict"].as_str().expect("verdicts").chars().collect();
        let picks = official["pick"].as_array().expect("picks");
        assert_eq!(verdicts.len(), items.len(), "{extractor}");
        let (mut differ, mut random, mut raises) = (0, 0, 0);
        for (i, item) in items.iter().enumerate() {
            let answer = answer_for(extractor, item);
            let mut rng = SplitMix64::new(i as u64);
            let ours = mcq::judge(extractor, &item.reply, &answer, &item.options, &mut rng).expect("known extractor");
            let reading =
                mcq::extract(extractor, &item.reply, &item.options, &mut SplitMix64::new(i as u64)).expect("known");
            let letters: Vec<String> =
                (0..item.options.len()).map(|k| ((b'A' + k as u8) as char).to_string()).collect();
            let ok = match verdicts[i] {
                'R' => ours == Verdict::Scored(true),
                'W' => ours == Verdict::Scored(false),
                'X' => ours == Verdict::Excluded,
                'E' => {
                    raises += 1;
                    ours == Verdict::Scored(false)
                }
                '?' => {
                    random += 1;
                    reading.random && reading.pick.as_ref().is_some_and(|p| letters.contains(p))
                }
                other => panic!("unknown verdict {other}"),
            };
            // Where the official code neither raised nor drew at random, what was compared must be equal too.
            let same_pick =
                matches!(verdicts[i], 'E' | '?') || (!reading.random && reading.pick.as_deref() == picks[i].as_str());
            if !(ok && same_pick) {
                differ += 1;
                if failures.len() < 40 {
                    failures.push(format!(
                        "{extractor} item {i} reply {:?} answer {answer}: official {} {:?}, ours {ours:?} {:?}",
                        item.reply, verdicts[i], picks[i], reading.pick
                    ));
                }
            }
        }
        report.push(format!("{extractor}: {differ} of {} differ ({random} random, {raises} raise)", items.len()));
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}\n{}", report.join("\n"), failures.join("\n"));
}
