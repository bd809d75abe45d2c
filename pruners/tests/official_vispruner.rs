//! VisPruner against a transcription of the official `encode_images` loop (Theia-4869/VisPruner): the same kept
//! indices on random and clustered inputs, for several budgets and important ratios. The fixture and its generator
//! are in `tests/official/vispruner/` (`python make_vispruner.py` rewrites the fixture). The generator keeps every
//! sort's neighbours at least 1e-5 apart, and the picks must also survive features nudged by a few f32 ulps: a CPU
//! with other SIMD kernels sums the cosines in another order.

#[path = "official/fixture_json.rs"]
mod json;

use json::{nudged, Json};
use tokensieve_pruners::{prune, Budget, CpuBackend, Method, TokenSet};

#[test]
fn vispruner_keeps_what_the_official_loop_keeps() {
    let text = include_str!("official/vispruner/vispruner.json");
    let fixture = Json::parse(text);
    let mut checked = 0;
    for case in fixture.get("cases").arr() {
        let (n, d) = (case.get("n").f64() as usize, case.get("d").f64() as usize);
        let features = case.get("features").flat_matrix(n, d);
        let attention = case.get("cls_attention").f32s();
        let exact = TokenSet::from_array(features.clone()).unwrap().with_cls_attention(attention.clone()).unwrap();
        let moved = TokenSet::from_array(nudged(&features)).unwrap().with_cls_attention(attention).unwrap();
        for run in case.get("runs").arr() {
            let k = run.get("k").f64() as usize;
            let ratio = run.get("important_ratio").f64();
            let (method, _) = Method::from_spec(&format!("vispruner:important_ratio={ratio}")).unwrap();
            for (tokens, inputs) in [(&exact, "exact"), (&moved, "nudged")] {
                let s = prune(&CpuBackend, &method, tokens, Budget::Keep(k)).unwrap();
                assert_eq!(s.kept, run.get("kept").usizes(), "{} ({inputs}) k={k} r={ratio}", case.get("name").str());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "every committed run was compared");
}
