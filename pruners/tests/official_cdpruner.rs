//! CDPruner against a transcription of its official code (Theia-4869/CDPruner, `llava/model/llava_arch.py`,
//! `encode_images`): `tests/official/cdpruner/make_cdpruner.py` writes the inputs and the official picks of seeded
//! random and clustered token sets, through both the relevance signal and the query path, and a hand-built case
//! where only the official min-max (epsilon in the numerator) lets the least relevant token be picked. The kept
//! indices must be equal. Readings taken (see the script): exact arithmetic (float64), `k` below the kernel rank.

#[path = "official/fixture_json.rs"]
mod fixture_json;

use fixture_json::{fixture_dir, Json};
use tokensieve_pruners::{prune, Budget, CpuBackend, Method, TokenSet};

#[test]
fn cdpruner_keeps_what_the_official_code_keeps() {
    let fixture = Json::read(&fixture_dir("cdpruner").join("cdpruner.json"));
    let (method, _) = Method::from_spec("cdpruner").unwrap();
    let mut runs = 0;
    for case in fixture.get("cases").arr() {
        let name = case.get("name").str();
        let tokens = TokenSet::from_array(case.get("features").matrix()).unwrap();
        let tokens = match case.get("mode").str() {
            "relevance" => tokens.with_relevance(case.get("relevance").f32s()).unwrap(),
            "query" => tokens.with_query(&CpuBackend, case.get("query").matrix()).unwrap(),
            other => panic!("{name}: unknown mode {other}"),
        };
        for run in case.get("runs").arr() {
            let k = run.get("k").usize();
            let got = prune(&CpuBackend, &method, &tokens, Budget::Keep(k)).unwrap();
            assert_eq!(got.kept, run.get("kept").usizes(), "{name}, k = {k}");
            assert!(got.notes.is_empty(), "{name}, k = {k}: no fallback within the kernel's rank: {:?}", got.notes);
            runs += 1;
        }
    }
    assert_eq!(runs, 13, "every case of the fixture ran");
}
