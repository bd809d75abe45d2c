//! PruMerge+ against a transcription of the official adaptive path (42Shawn/LLaVA-PruMerge,
//! `token_prune_merge_advanced_plus`): the same kept tokens, merged rows and extra token (within 1e-5) on random
//! and clustered inputs whose attention is the official single full-width head, and on crafted attentions where
//! Python's float count expressions differ from integer ones. Fixture and generator: `tests/official/prumerge_plus/`.

#[path = "official/fixture_json.rs"]
mod json;

use json::Json;
use tokensieve_pruners::{prune, Budget, CpuBackend, Method, TokenSet};

fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

#[test]
fn prumerge_plus_keeps_and_merges_what_the_official_code_does() {
    let fixture = Json::parse(include_str!("official/prumerge_plus/prumerge_plus.json"));
    let (method, _) = Method::from_spec("prumerge-plus").unwrap();
    let mut checked = 0;
    for case in fixture.get("cases").arr() {
        let name = case.get("name").str();
        let (n, d) = (case.get("n").f64() as usize, case.get("d").f64() as usize);
        let tokens = TokenSet::from_array(case.get("features").flat_matrix(n, d))
            .unwrap()
            .with_cls_attention(case.get("cls_attention").f32s())
            .unwrap()
            .with_keys(&CpuBackend, case.get("keys").flat_matrix(n, d))
            .unwrap();
        // The official code has no budget: ask for N - 1, above every adaptive count here.
        let s = prune(&CpuBackend, &method, &tokens, Budget::Keep(n - 1)).unwrap();
        let kept = case.get("kept").usizes();
        assert_eq!(s.kept, kept, "{name}: kept");
        let outliers = case.get("outliers").f64() as usize;
        assert!(s.notes.iter().any(|t| t.starts_with(&format!("adaptive: {outliers} IQR outliers"))), "{name}");
        let merged = s.merged.expect("prumerge-plus merges");
        let want = case.get("rows").flat_matrix(kept.len(), d);
        for ((r, c), &w) in want.indexed_iter() {
            assert!(close(merged[[r, c]], w), "{name} row {r} col {c}: {} vs {w}", merged[[r, c]]);
        }
        let extra = s.extra.expect("the extra token");
        for (c, &w) in case.get("extra").f32s().iter().enumerate() {
            assert!(close(extra[[0, c]], w), "{name} extra col {c}: {} vs {w}", extra[[0, c]]);
        }
        checked += 1;
    }
    assert_eq!(checked, 5, "every committed case was compared");
}
