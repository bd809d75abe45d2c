//! FastVID against our transcription of its official code (`tests/official/fastvid/make_fastvid.py`, from
//! LunarShen/FastVID `modeling_qwen2.py`, the FastVID block of `Qwen2Model.forward`) on the committed random and
//! clustered inputs of `tests/official/fastvid/fastvid.json`: the same segments, exactly the same kept indices and
//! the merged rows within 1e-5. The transcription leaves out the official 1e-6 density noise (its generator
//! rejects inputs close enough to a tie for the noise to matter) and is given the project's stand-in global frame
//! features (the mean normalised token), as the pruner computes them.

#[path = "official/fixture_json.rs"]
mod fixture_json;

use fixture_json::Json;
use tokensieve_pruners::{prune, Budget, CpuBackend, Layout, Method, TokenSet};

#[test]
fn fastvid_equals_the_official_block() {
    let fixture = Json::parse(include_str!("official/fastvid/fastvid.json"));
    let mut multi_frame = false;
    for case in fixture.get("cases").arr() {
        let name = case.get("name").str();
        let (frames, h, w) = (case.get("frames").usize(), case.get("h").usize(), case.get("w").usize());
        let tokens = TokenSet::from_array(case.get("features").matrix())
            .unwrap()
            .with_layout(Layout::frames(frames, h, w))
            .unwrap()
            .with_cls_attention(case.get("attention").f32s())
            .unwrap();
        let (method, _) = Method::from_spec(case.get("params").str()).unwrap();
        let k = frames * case.get("retain_per_frame").usize();
        let s = prune(&CpuBackend, &method, &tokens, Budget::Keep(k)).unwrap();
        let segments = case.get("segments").usizes();
        multi_frame |= segments.iter().any(|&l| l > 1);
        assert_eq!(s.notes, vec![format!("{} segments", segments.len())], "{name}: DySeg");
        assert_eq!(s.kept, case.get("kept").usizes(), "{name}: kept indices");
        let want = case.get("merged").matrix();
        let got = s.merged.as_ref().expect("FastVID merges");
        assert_eq!(got.dim(), want.dim(), "{name}");
        let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: merged rows differ by {worst}");
        // The pooled opt-in differs exactly where a segment has several anchor frames (more than p frames).
        let p: usize =
            case.get("params").str().split(',').find_map(|kv| kv.strip_prefix("p=")).unwrap().parse().unwrap();
        let spec = format!("{},merge=pooled", case.get("params").str());
        let pooled = prune(&CpuBackend, &Method::from_spec(&spec).unwrap().0, &tokens, Budget::Keep(k)).unwrap();
        let differs = pooled.merged.unwrap().iter().zip(got.iter()).any(|(a, b)| (a - b).abs() > 1e-4);
        assert_eq!(
            differs,
            segments.iter().any(|&l| l > p),
            "{name}: pooled differs exactly with several anchor frames"
        );
    }
    assert!(multi_frame, "the fixture exercises multi-frame segments");
}
