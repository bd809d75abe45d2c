//! A tiny random Qwen3-VL (ViT with a learned, bilinearly resampled position table, 2-D RoPE, DeepStack mergers;
//! Qwen3 decoder with q/k head norms, an explicit head width and interleaved M-RoPE) against transformers 5.24
//! (`fixtures/make_qwen3_vl_fixtures.py`): merged features and DeepStack planes within 1e-4; last-position logits
//! within 1e-4 for one image (a 12 x 16 patch grid resampled from the 8 x 8 table), two images of different grids, a
//! video whose temporal patches are separate spans after their `<t seconds>` text, and a video before an image, at
//! `get_rope_index`'s ids; 20 greedy tokens of the video prompt; the video prompt with 12 of its 32 tokens kept
//! (their DeepStack rows gathered with the same keep set, each patch's span holding its own count), 5 greedy tokens
//! after it; and FastV (K = 1, R = 0.5) inside the decoder, where the second DeepStack level reaches only the kept
//! rows.

#![cfg(feature = "torch")]

use std::path::PathBuf;
use tch::Tensor;
use tokensieve_models::arch::SignalRequest;
use tokensieve_models::llama::{
    DeepStack, KvCache, LayerPlan, PositionMode, PrefillPlan, QueryRows, RuleError, StageView,
};
use tokensieve_models::positions::PositionIds;
use tokensieve_models::qwen_vision::QwenTap;
use tokensieve_pruners::in_decoder::fastv::FastV;

const IMAGE: i64 = 92;
const VIDEO: i64 = 93;

mod common;
use common::{last_row, max_diff, Model, Reference};

fn dir() -> PathBuf {
    common::fixture("tiny_qwen3_vl")
}

/// Merged tokens `[N, D]` and DeepStack planes `[N, D]` per level of one encoded grid.
struct Encoded {
    features: Tensor,
    planes: Vec<Tensor>,
}

impl From<QwenTap> for Encoded {
    fn from(tap: QwenTap) -> Self {
        Encoded {
            features: tap.features.flatten(0, 1),
            planes: tap.deepstack.iter().map(|p| p.flatten(0, 1)).collect(),
        }
    }
}

fn cat(parts: &[&Encoded]) -> Encoded {
    let features = Tensor::cat(&parts.iter().map(|e| &e.features).collect::<Vec<_>>(), 0);
    let planes = (0..parts[0].planes.len())
        .map(|l| Tensor::cat(&parts.iter().map(|e| &e.planes[l]).collect::<Vec<_>>(), 0))
        .collect();
    Encoded { features, planes }
}

impl Model {
    fn encode(&self, rows: &Tensor, grid: [usize; 3]) -> Encoded {
        self.vision.encode(rows, grid, SignalRequest::default()).unwrap().into()
    }

    /// The prefill of `ids` with `visual` written at its image and video placeholders (in prompt order) and its
    /// DeepStack planes at the same rows.
    fn prefill(&self, ids: &[i64], visual: &Encoded, positions: &PositionIds, cache: &mut KvCache) -> Tensor {
        let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == IMAGE || ids[i] == VIDEO).collect();
        // merge_at writes one part per placeholder id in order; a mixed prompt passes its parts per id instead.
        let pad = ids[rows[0]];
        let embeds = self.embeds(ids, &[(pad, &visual.features)]);
        let stack = DeepStack { rows, planes: visual.planes.iter().map(|p| p.shallow_clone()).collect() };
        self.text.forward_embeds_stacked(embeds, positions, cache, None, Some(stack)).unwrap()
    }
}

#[test]
fn tiny_qwen3_vl_matches_transformers_unpruned() {
    for device in tokensieve_models::runtime::compute_devices_reported() {
        let r = Reference::open(&dir());
        let m = Model::load(&dir(), device);
        for case in ["image", "video"] {
            let enc = m.encode(&r.tensor(&format!("{case}_pixels")), r.grid(&format!("{case}_grid")));
            let d = max_diff(&enc.features, &r.tensor(&format!("{case}_features")));
            assert!(d <= 1e-4, "{case} features on {device:?} differ by {d}");
            let planes = Tensor::stack(&enc.planes, 0);
            let d = max_diff(&planes, &r.tensor(&format!("{case}_deepstack")));
            assert!(d <= 1e-4, "{case} DeepStack planes on {device:?} differ by {d}");
            let ids = r.ints(&format!("{case}_ids"));
            let logits = m.prefill(&ids, &enc, &r.positions(&format!("{case}_positions")), &mut KvCache::default());
            let d = max_diff(&logits, &last_row(&r.tensor(&format!("{case}_logits"))));
            assert!(d <= 1e-4, "{case} logits on {device:?} differ by {d}");
        }
        // Two images of different grids.
        let (pixels, grids) = (r.tensor("two_pixels"), r.ints("two_grid"));
        let grid = |i: usize| [grids[3 * i] as usize, grids[3 * i + 1] as usize, grids[3 * i + 2] as usize];
        let first = (grid(0)[1] * grid(0)[2]) as i64;
        let a = m.encode(&pixels.narrow(0, 0, first), grid(0));
        let b = m.encode(&pixels.narrow(0, first, pixels.size()[0] - first), grid(1));
        let logits =
            m.prefill(&r.ints("two_ids"), &cat(&[&a, &b]), &r.positions("two_positions"), &mut KvCache::default());
        let d = max_diff(&logits, &last_row(&r.tensor("two_logits")));
        assert!(d <= 1e-4, "two images on {device:?}: logits differ by {d}");
        // A video before an image: the features go in per placeholder id, the planes in prompt order.
        let video = m.encode(&r.tensor("mixed_video_pixels"), r.grid("mixed_video_grid"));
        let image = m.encode(&r.tensor("mixed_image_pixels"), r.grid("mixed_image_grid"));
        let ids = r.ints("mixed_ids");
        let embeds = m.embeds(&ids, &[(VIDEO, &video.features), (IMAGE, &image.features)]);
        let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == IMAGE || ids[i] == VIDEO).collect();
        let stack = DeepStack { rows, planes: cat(&[&video, &image]).planes };
        let logits = m
            .text
            .forward_embeds_stacked(embeds, &r.positions("mixed_positions"), &mut KvCache::default(), None, Some(stack))
            .unwrap();
        let d = max_diff(&logits, &last_row(&r.tensor("mixed_logits")));
        assert!(d <= 1e-4, "video before image on {device:?}: logits differ by {d}");
        // 20 greedy tokens after the video prompt.
        let enc = m.encode(&r.tensor("video_pixels"), r.grid("video_grid"));
        let mut cache = KvCache::default();
        let first = m.prefill(&r.ints("video_ids"), &enc, &r.positions("video_positions"), &mut cache);
        assert_eq!(m.greedy(&first, &mut cache, 20), r.ints("video_greedy"), "greedy tokens on {device:?}");
    }
}

#[test]
fn tiny_qwen3_vl_matches_transformers_with_kept_tokens() {
    for device in tokensieve_models::runtime::compute_devices_reported() {
        let r = Reference::open(&dir());
        let m = Model::load(&dir(), device);
        let enc = m.encode(&r.tensor("video_pixels"), r.grid("video_grid"));
        // Pre-LLM: 12 of the 32 video tokens and their DeepStack rows, at their original 3-D ids.
        let kept = Tensor::from_slice(&r.ints("pruned_kept")).to_device(device);
        let pruned = Encoded {
            features: enc.features.index_select(0, &kept),
            planes: enc.planes.iter().map(|p| p.index_select(0, &kept)).collect(),
        };
        let mut cache = KvCache::default();
        let first = m.prefill(&r.ints("pruned_ids"), &pruned, &r.positions("pruned_positions"), &mut cache);
        let d = max_diff(&first, &last_row(&r.tensor("pruned_logits")));
        assert!(d <= 1e-4, "pruned prompt on {device:?}: logits differ by {d}");
        assert_eq!(m.greedy(&first, &mut cache, 5), r.ints("pruned_greedy"), "pruned greedy on {device:?}");
        // FastV before layer 1 over the video tokens only: the span runs from the first video token to the last,
        // and the timestamp and span tokens between the two temporal patches are always kept.
        let ids = r.ints("video_ids");
        let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == VIDEO).collect();
        let span = rows[0]..rows[rows.len() - 1] + 1;
        let video: Vec<usize> = rows.iter().map(|&i| i - span.start).collect();
        let rule = FastV { layer: 1, ratio: 0.5 };
        let mut chosen = Vec::new();
        let mut stage = |view: StageView<'_>| -> Result<LayerPlan, RuleError> {
            // The rule sees the video columns as one contiguous span of 32.
            let row: Vec<f32> = video.iter().map(|&o| view.rows[0][view.span.start + o]).collect();
            let picked = rule.select(&row, 0..video.len())?;
            chosen = picked.clone();
            let mut kept: Vec<usize> = picked.iter().map(|&k| video[k]).collect();
            kept.extend((0..view.span.len()).filter(|o| !video.contains(o)));
            kept.sort_unstable();
            Ok(LayerPlan::keep(kept))
        };
        let plan = PrefillPlan {
            layers: vec![1],
            span,
            rows: QueryRows::Last,
            rule: &mut stage,
            positions: PositionMode::Original,
        };
        let embeds = m.embeds(&ids, &[(VIDEO, &enc.features)]);
        let stack = DeepStack { rows: rows.clone(), planes: enc.planes.iter().map(|p| p.shallow_clone()).collect() };
        let logits = m
            .text
            .forward_embeds_stacked(
                embeds,
                &r.positions("video_positions"),
                &mut KvCache::default(),
                Some(plan),
                Some(stack),
            )
            .unwrap();
        let want: Vec<usize> = r.ints("fastv_kept").iter().map(|&k| k as usize).collect();
        assert_eq!(chosen, want, "FastV's kept set on {device:?}");
        let d = max_diff(&logits, &r.tensor("fastv_logits"));
        assert!(d <= 1e-4, "FastV on {device:?}: logits differ by {d}");
    }
}
