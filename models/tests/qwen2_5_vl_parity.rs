//! A tiny random Qwen2.5-VL (windowed ViT with 2-D RoPE + merger, Qwen2 decoder with M-RoPE) against transformers
//! 5.24 (`fixtures/make_qwen2_5_vl_fixtures.py`): merged vision features and last-position logits within 1e-4 for
//! one image (windows that need padding), two images of different grids, a video (temporal ids scaled by
//! `second_per_grid_t · tokens_per_second`) and a video before an image, at transformers' `get_rope_index` ids; the
//! 20 greedy tokens of the video prompt; the video prompt with 12 of its 32 tokens kept before the decoder (their
//! original 3-D ids, the text after as unpruned) with 5 greedy tokens after it; and FastV (K = 2, R = 0.5) inside
//! the decoder on the video prompt, its kept set and logits.

#![cfg(feature = "torch")]

use std::path::PathBuf;
use tch::Tensor;
use tokensieve_models::arch::SignalRequest;
use tokensieve_models::llama::{
    KvCache, LayerPlan, PositionMode, PrefillPlan, QueryRows, RuleError, StageRule, StageView,
};
use tokensieve_models::positions::PositionIds;
use tokensieve_pruners::in_decoder::fastv::FastV;

const IMAGE: i64 = 92;
const VIDEO: i64 = 93;

mod common;
use common::{last_row, max_diff, Model, Reference};

fn dir() -> PathBuf {
    common::fixture("tiny_qwen2_5_vl")
}

impl Model {
    /// Merged tokens `[N, D]` of a grid's patches.
    fn features(&self, r: &Reference, pixels: &str, grid: &str) -> Tensor {
        let tap = self.vision.encode(&r.tensor(pixels), r.grid(grid), SignalRequest::default()).unwrap();
        tap.features.flatten(0, 1)
    }

    fn prefill(&self, ids: &[i64], parts: &[(i64, &Tensor)], positions: &PositionIds, cache: &mut KvCache) -> Tensor {
        self.text.forward_embeds_positioned(self.embeds(ids, parts), positions, cache, None).unwrap()
    }

    /// The unpruned video prompt's last logits with `rule` dropping video rows before layer 2, reading `rows`.
    fn video_with_rule(&self, r: &Reference, features: &Tensor, rows: QueryRows, rule: StageRule<'_>) -> Tensor {
        let ids = r.ints("video_ids");
        let start = ids.iter().position(|&t| t == VIDEO).unwrap();
        let plan =
            PrefillPlan { layers: vec![2], span: start..start + 32, rows, rule, positions: PositionMode::Original };
        let embeds = self.embeds(&ids, &[(VIDEO, features)]);
        self.text
            .forward_embeds_positioned(embeds, &r.positions("video_positions"), &mut KvCache::default(), Some(plan))
            .unwrap()
    }
}

#[test]
fn tiny_qwen2_5_vl_matches_transformers_unpruned() {
    for device in tokensieve_models::runtime::compute_devices_reported() {
        let r = Reference::open(&dir());
        let m = Model::load(&dir(), device);
        for case in ["image", "video"] {
            let (pad, pixels) = if case == "image" { (IMAGE, "image_pixels") } else { (VIDEO, "video_pixels") };
            let features = m.features(&r, pixels, &format!("{case}_grid"));
            let d = max_diff(&features, &r.tensor(&format!("{case}_features")));
            assert!(d <= 1e-4, "{case} features on {device:?} differ by {d}");
            let ids = r.ints(&format!("{case}_ids"));
            let positions = r.positions(&format!("{case}_positions"));
            let logits = m.prefill(&ids, &[(pad, &features)], &positions, &mut KvCache::default());
            let d = max_diff(&logits, &last_row(&r.tensor(&format!("{case}_logits"))));
            assert!(d <= 1e-4, "{case} logits on {device:?} differ by {d}");
        }
        // Two images of different grids in one prompt.
        let (pixels, grids) = (r.tensor("two_pixels"), r.ints("two_grid"));
        let grid = |i: usize| [grids[3 * i] as usize, grids[3 * i + 1] as usize, grids[3 * i + 2] as usize];
        let first = (grid(0)[1] * grid(0)[2]) as i64;
        let encode = |rows: Tensor, g: [usize; 3]| {
            m.vision.encode(&rows, g, SignalRequest::default()).unwrap().features.flatten(0, 1)
        };
        let a = encode(pixels.narrow(0, 0, first), grid(0));
        let b = encode(pixels.narrow(0, first, pixels.size()[0] - first), grid(1));
        let both = Tensor::cat(&[a, b], 0);
        let logits =
            m.prefill(&r.ints("two_ids"), &[(IMAGE, &both)], &r.positions("two_positions"), &mut KvCache::default());
        let d = max_diff(&logits, &last_row(&r.tensor("two_logits")));
        assert!(d <= 1e-4, "two images on {device:?}: logits differ by {d}");
        // A video before an image.
        let video = m.features(&r, "mixed_video_pixels", "mixed_video_grid");
        let image = m.features(&r, "mixed_image_pixels", "mixed_image_grid");
        let parts = [(VIDEO, &video), (IMAGE, &image)];
        let logits = m.prefill(&r.ints("mixed_ids"), &parts, &r.positions("mixed_positions"), &mut KvCache::default());
        let d = max_diff(&logits, &last_row(&r.tensor("mixed_logits")));
        assert!(d <= 1e-4, "video before image on {device:?}: logits differ by {d}");
        // 20 greedy tokens after the video prompt: decoding continues from the largest id + 1 (rope_deltas).
        let features = m.features(&r, "video_pixels", "video_grid");
        let mut cache = KvCache::default();
        let first = m.prefill(&r.ints("video_ids"), &[(VIDEO, &features)], &r.positions("video_positions"), &mut cache);
        assert_eq!(m.greedy(&first, &mut cache, 20), r.ints("video_greedy"), "greedy tokens on {device:?}");
    }
}

#[test]
fn tiny_qwen2_5_vl_matches_transformers_with_kept_tokens() {
    for device in tokensieve_models::runtime::compute_devices_reported() {
        let r = Reference::open(&dir());
        let m = Model::load(&dir(), device);
        let features = m.features(&r, "video_pixels", "video_grid");
        // Pre-LLM: 12 of the 32 video tokens, at their original 3-D ids.
        let kept = r.ints("pruned_kept");
        let rows = features.index_select(0, &Tensor::from_slice(&kept).to_device(device));
        let mut cache = KvCache::default();
        let first = m.prefill(&r.ints("pruned_ids"), &[(VIDEO, &rows)], &r.positions("pruned_positions"), &mut cache);
        let d = max_diff(&first, &last_row(&r.tensor("pruned_logits")));
        assert!(d <= 1e-4, "pruned prompt on {device:?}: logits differ by {d}");
        assert_eq!(m.greedy(&first, &mut cache, 5), r.ints("pruned_greedy"), "pruned greedy on {device:?}");
        // FastV inside the decoder on the unpruned prompt.
        let rule = FastV { layer: 2, ratio: 0.5 };
        let mut chosen = Vec::new();
        let mut stage = |view: StageView<'_>| -> Result<LayerPlan, RuleError> {
            let kept = rule.select(&view.rows[0], view.span.clone())?;
            chosen = kept.clone();
            Ok(LayerPlan::keep(kept))
        };
        let logits = m.video_with_rule(&r, &features, QueryRows::Last, &mut stage);
        let want: Vec<usize> = r.ints("fastv_kept").iter().map(|&k| k as usize).collect();
        assert_eq!(chosen, want, "FastV's kept set on {device:?}");
        let d = max_diff(&logits, &r.tensor("fastv_logits"));
        assert!(d <= 1e-4, "FastV on {device:?}: logits differ by {d}");
    }
}

/// DART inside the decoder (K = 2, ratio 0.5, 4 + 4 pivots) on the unpruned video prompt against
/// `fixtures/make_dart_fixture.py` (transformers' layers, the official selection transcribed): layer 1's key L1
/// norms within 1e-4, the same 20 kept tokens (pivots by key norm, then per pivot the 2 least similar final-normed
/// states) and the last logits within 1e-4 after layers 2-3 ran on the kept rows at their original 3-D ids.
#[test]
fn tiny_qwen2_5_vl_dart_matches_the_transcribed_official_selection() {
    use tokensieve_pruners::in_decoder::dart::Dart;
    use tokensieve_pruners::CpuBackend;
    let want = tokensieve_models::safetensors::Safetensors::open(&dir().join("dart.safetensors")).expect("fixture");
    let floats = |n: &str| want.tensor_f32(n).unwrap().0;
    for device in tokensieve_models::runtime::compute_devices_reported() {
        let r = Reference::open(&dir());
        let m = Model::load(&dir(), device);
        let features = m.features(&r, "video_pixels", "video_grid");
        let rule = Dart { layer: 2, ratio: 0.5, keep: None, image_pivots: 4, text_pivots: 4 };
        let (mut chosen, mut norms) = (Vec::new(), Vec::new());
        let mut stage = |view: StageView<'_>| -> Result<LayerPlan, RuleError> {
            norms = view.rows[0].clone();
            // The states on the host (the engine adopts them on the device's backend instead).
            let states = view.normed.expect("KeyNorms plans get the final-normed states");
            let (s, d) = states.size2().unwrap();
            let values: Vec<f32> = Vec::try_from(states.to_kind(tch::Kind::Float).reshape([-1])).unwrap();
            let host = ndarray::Array2::from_shape_vec((s as usize, d as usize), values).unwrap();
            let plan = rule.stage(&CpuBackend, view.rows, view.span.clone(), &host)?;
            chosen = plan.kept.clone();
            Ok(LayerPlan::keep(plan.kept))
        };
        let logits = m.video_with_rule(&r, &features, QueryRows::KeyNorms, &mut stage);
        let d = norms.iter().zip(floats("dart_norms")).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d <= 1e-4, "key norms on {device:?} differ by {d}");
        let kept: Vec<usize> = floats("dart_kept").iter().map(|&k| k as usize).collect();
        assert_eq!(chosen, kept, "DART's kept set on {device:?}");
        let d = max_diff(&logits, &Tensor::from_slice(&floats("dart_logits")));
        assert!(d <= 1e-4, "DART on {device:?}: logits differ by {d}");
    }
}
