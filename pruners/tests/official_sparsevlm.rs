//! SparseVLM's selection (the pure part of the in-decoder rule) against a transcription of its official code
//! (Gumpest/SparseVLMs v1: the raters and the pruning-layer block of `LlamaDynamicvitModel.forward`,
//! `attn_postprocess_topk`, `cluster_and_merge`): `tests/official/sparsevlm/make_sparsevlm.py` writes seeded random
//! and clustered spans with the attention rows the rule reads and the official raters, kept offsets and recycled
//! tokens (1, 2 and 3 clusters, and a count above `n − 1`). Raters and kept offsets must be equal, recycled tokens
//! within 1e-5. Readings taken (see the script): exact density and centre-score ties by candidate order instead of
//! the official `rand · 1e−6` noise. The whole rule in a decoder is proven in `models/tests/in_decoder_rules.rs`.

#[path = "official/fixture_json.rs"]
mod fixture_json;

use fixture_json::{fixture_dir, Json};
use tokensieve_pruners::in_decoder::sparsevlm::{raters, SparseVlm};
use tokensieve_pruners::CpuBackend;

#[test]
fn sparsevlm_selection_equals_the_official_code() {
    let fixture = Json::read(&fixture_dir("sparsevlm").join("sparsevlm.json"));
    let mut cases = 0;
    for case in fixture.get("cases").arr() {
        let name = case.get("name").str();
        let chosen = raters(&CpuBackend, &case.get("visual").matrix(), &case.get("text").matrix()).unwrap();
        assert_eq!(chosen, case.get("raters").usizes(), "{name}: raters");
        let rows: Vec<Vec<f32>> = case.get("rows").arr().iter().map(Json::f32s).collect();
        let hidden = case.get("hidden").matrix();
        let prefix = case.get("prefix").usize();
        let span = prefix..prefix + hidden.nrows();
        let rule = SparseVlm { layers: vec![2], counts: vec![case.get("count").usize()], ..SparseVlm::default() };
        let plan = rule.stage(&CpuBackend, 0, &rows, &chosen, span, &hidden).unwrap();
        assert_eq!(plan.kept, case.get("kept").usizes(), "{name}: kept offsets");
        assert!(plan.replace.is_none(), "{name}: SparseVLM keeps the kept rows as they are");
        let want = case.get("recycled").matrix();
        let got = plan.extra.expect("something was pruned, so something is recycled");
        assert_eq!(got.dim(), want.dim(), "{name}: recycled tokens (int(n_r / 10) + 1 clusters)");
        let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}: recycled tokens differ by {worst}");
        cases += 1;
    }
    assert_eq!(cases, 8, "every case of the fixture ran");
}
