//! DyCoke against our transcription of its official code (`tests/official/dycoke/make_dycoke.py`, from KD-TAO/DyCoke
//! `llava_arch.py::dycole_ttm` and `modeling_qwen2.py::PrunableDynamicCache.dycoke_pruning` / `update_cache`), on
//! the committed random and clustered inputs of `tests/official/dycoke/dycoke.json`.
//!
//! TTM only selects rows, so the kept indices are the whole output; the official code emits a compared frame's
//! tokens in ascending-similarity order, the project in index order (the `Selection` contract), so the sets are
//! compared. The KV rule is compared step by step on the same head-averaged attention rows.

#[path = "official/fixture_json.rs"]
mod fixture_json;

use fixture_json::Json;
use tokensieve_pruners::in_decoder::dycoke_kv::DycokeKv;
use tokensieve_pruners::in_decoder::InDecoder;
use tokensieve_pruners::{prune, Budget, CpuBackend, Layout, Method, TokenSet};

fn fixture() -> Json {
    Json::parse(include_str!("official/dycoke/dycoke.json"))
}

#[test]
fn ttm_keeps_exactly_the_tokens_of_the_official_loops() {
    let fixture = fixture();
    let (method, params) = Method::from_spec("dycoke").unwrap();
    assert_eq!(params.effective()["dycoke_k"], "0.7", "the default is lmms-eval's dycoke_k");
    let mut seen_drop = false;
    for case in fixture.get("ttm").arr() {
        let name = case.get("name").str();
        let frames = case.get("frames").usize();
        let (h, w) = (case.get("h").usize(), case.get("w").usize());
        assert_eq!(case.get("dycoke_k").num(), 0.7);
        let x = case.get("features").matrix();
        let n = x.nrows();
        let tokens = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(frames, h, w)).unwrap();
        let emitted = case.get("emitted").usizes();
        let mut want = emitted.clone();
        want.sort_unstable();
        // Emission order differs from the index order inside compared frames (otherwise the set check below would
        // also hold for an output that merely copied the official order).
        assert_ne!(emitted, want, "{name}: the official order is not ascending");
        let s = prune(&CpuBackend, &method, &tokens, Budget::Keep(n - 1)).unwrap();
        assert_eq!(s.kept, want, "{name}");
        assert!(s.merged.is_none(), "{name}: TTM only selects");
        seen_drop |= frames % 2 == 1 && want.last() < Some(&((frames - 1) * h * w));
        // The budget below the official count is an error, not a different selection.
        assert!(prune(&CpuBackend, &method, &tokens, Budget::Keep(want.len() - 1)).is_err(), "{name}");
        // tail=full (the project's opt-in) keeps something else on these inputs: the test can tell them apart.
        let (full, _) = Method::from_spec("dycoke:tail=full").unwrap();
        assert_ne!(prune(&CpuBackend, &full, &tokens, Budget::Keep(n - 1)).unwrap().kept, want, "{name}");
    }
    assert!(seen_drop, "an odd-frame case drops its last frame");
}

#[test]
fn budget_mode_with_the_official_count_is_the_official_result() {
    let fixture = fixture();
    let (budget, _) = Method::from_spec("dycoke:dycoke_k=budget").unwrap();
    for case in fixture.get("ttm").arr() {
        let (frames, h, w) = (case.get("frames").usize(), case.get("h").usize(), case.get("w").usize());
        let tokens =
            TokenSet::from_array(case.get("features").matrix()).unwrap().with_layout(Layout::frames(frames, h, w));
        let mut want = case.get("emitted").usizes();
        want.sort_unstable();
        let s = prune(&CpuBackend, &budget, &tokens.unwrap(), Budget::Keep(want.len())).unwrap();
        assert_eq!(s.kept, want, "{}", case.get("name").str());
    }
}

#[test]
fn kv_selection_equals_the_official_rule_step_by_step() {
    let fixture = fixture();
    for case in fixture.get("kv").arr() {
        let name = case.get("name").str();
        let (start, length) = (case.get("start").usize(), case.get("length").usize());
        let prune = case.get("prune").num();
        let InDecoder::DycokeKv(rule) = InDecoder::from_spec(&format!("dycoke-kv:prune={prune}")).unwrap() else {
            panic!("dycoke-kv spec")
        };
        assert_eq!(rule, DycokeKv { prune, ..DycokeKv::default() });
        assert!(!rule.reuse, "the default is the official full cache on stable steps");
        let mut state = rule.state();
        let mut stable_steps = 0;
        for (t, (row, want)) in case.get("rows").arr().iter().zip(case.get("selected").arr()).enumerate() {
            let got = state.attend(&row.f32s(), start..start + length).unwrap();
            let want = (!want.is_null()).then(|| want.usizes());
            stable_steps += usize::from(want.is_none());
            assert_eq!(got, want, "{name}, step {t}");
        }
        if name.starts_with("drifting") {
            assert!(stable_steps > 0, "{name}: some steps keep the full cache");
        }
    }
}
