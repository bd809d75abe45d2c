//! D-CoDe against our transcription of its official code (`tests/official/dcode/make_dcode.py`, from hukcc/D-CoDe
//! `Dcode.py::token_select_and_merge` / `_merge_similar_tokens`) on the committed random and clustered inputs of
//! `tests/official/dcode/dcode.json`, with the three official merge strategies: exactly the same surviving tokens
//! and their merged rows within 1e-5. The official output is in walk (activation) order, the project's in index
//! order (the `Selection` contract), so rows are matched through the original index each was written at.

#[path = "official/fixture_json.rs"]
mod fixture_json;

use fixture_json::Json;
use tokensieve_pruners::{prune, Budget, CpuBackend, Layout, Method, TokenSet};

#[test]
fn reference_mode_equals_the_published_walk() {
    let fixture = Json::parse(include_str!("official/dcode/dcode.json"));
    let (_, params) = Method::from_spec("dcode").unwrap();
    assert_eq!(params.effective()["mode"], "reference", "the published walk is the default");
    let mut fixed_differs = 0;
    for case in fixture.get("cases").arr() {
        let name = case.get("name").str();
        let (frames, per_frame, top_k) =
            (case.get("frames").usize(), case.get("tokens_per_frame").usize(), case.get("top_k").usize());
        let x = case.get("features").matrix();
        let n = x.nrows();
        let tokens = TokenSet::from_array(x).unwrap().with_layout(Layout::frames(frames, 1, per_frame)).unwrap();
        let spec = format!("dcode:top_k={top_k},theta={},merge={}", case.get("theta").num(), case.get("merge").str());
        let (method, _) = Method::from_spec(&spec).unwrap();
        let s = prune(&CpuBackend, &method, &tokens, Budget::Keep(n - 1)).unwrap();
        let emitted = case.get("emitted").usizes();
        let rows = case.get("merged").matrix();
        // The official order: frame by frame, descending activation within a frame.
        let norm = |i: usize| tokens.features().row(i).dot(&tokens.features().row(i)).sqrt();
        assert!(
            emitted.windows(2).all(|p| p[0] / per_frame < p[1] / per_frame || norm(p[0]) > norm(p[1])),
            "{name}: the fixture is in walk order"
        );
        let mut order: Vec<usize> = (0..emitted.len()).collect();
        order.sort_by_key(|&r| emitted[r]);
        let want: Vec<usize> = order.iter().map(|&r| emitted[r]).collect();
        assert_eq!(s.kept, want, "{name}: surviving tokens");
        let got = s.merged.as_ref().expect("D-CoDe merges");
        for (out, &r) in order.iter().enumerate() {
            let worst = got.row(out).iter().zip(rows.row(r)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5, "{name}: row of token {} differs by {worst}", emitted[r]);
        }
        let (fixed, _) = Method::from_spec(&format!("{spec},mode=fixed")).unwrap();
        let f = prune(&CpuBackend, &fixed, &tokens, Budget::Keep(n - 1)).unwrap();
        let same_rows =
            f.kept == s.kept && f.merged.unwrap().iter().zip(got.iter()).all(|(a, b)| (a - b).abs() <= 1e-5);
        fixed_differs += usize::from(!same_rows);
    }
    assert!(
        fixed_differs >= 3,
        "the clustered cases tell the published walk from the fixed one ({fixed_differs} cases)"
    );
}
