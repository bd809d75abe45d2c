//! What the Qwen-VL vision towers compute from a patch grid alone, on the host and without a backend: the
//! `vision_config` keys, each patch's rotary `(row, col)` ids, the window order and window batches of Qwen2.5-VL's
//! windowed attention, and Qwen3-VL's bilinear taps into its learned position table. The libtorch tower
//! (`crate::qwen_vision`) and the ONNX encoder graph (`models/export/qwen_onnx.py`, which takes them as inputs
//! because transformers computes them with Python loops a trace cannot follow) both read them from here, so the two
//! backends cannot disagree on them.
//!
//! transformers' counterparts (`transformers.vision_utils`): `get_vision_position_ids`, `get_vision_window_index`
//! and `get_vision_interpolation_indices_and_weights` (bilinear, `align_corners=True`, border taps clamped), all
//! for one temporal patch in merge-block order: per merge block row by row, the block's patches row by row.
//! Cost: O(P) for a frame of `P` patches.

use serde::Deserialize;

/// `rope_parameters` of the vision config.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionRope {
    /// The rotary base.
    pub rope_theta: Option<f64>,
}

/// The `vision_config` keys of a `qwen2_5_vl` or `qwen3_vl` `config.json` (transformers' names and defaults).
#[derive(Debug, Clone, Deserialize)]
pub struct QwenVisionConfig {
    /// Blocks.
    pub depth: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Spatial patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// The merger's block side.
    pub spatial_merge_size: usize,
    /// Window side in pixels (Qwen2.5-VL; Qwen3-VL attends to whole frames in every block).
    #[serde(default)]
    pub window_size: usize,
    /// Blocks with full (per-frame) attention (Qwen2.5-VL).
    #[serde(default)]
    pub fullatt_block_indexes: Vec<usize>,
    /// Width of the merged tokens (the LLM's hidden size).
    pub out_hidden_size: usize,
    /// Input channels.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// The MLP activation: `silu` (Qwen2.5-VL's gated MLP) or `gelu_pytorch_tanh` (Qwen3-VL).
    #[serde(default = "silu")]
    pub hidden_act: String,
    /// Temporal position ids per second of video (Qwen2.5-VL's rope index scale).
    #[serde(default = "two")]
    pub tokens_per_second: f64,
    /// Entries of the learned position table, a square grid (Qwen3-VL).
    #[serde(default)]
    pub num_position_embeddings: Option<usize>,
    /// Blocks whose output feeds a DeepStack merger (Qwen3-VL).
    #[serde(default)]
    pub deepstack_visual_indexes: Vec<usize>,
    /// The rotary base, when given.
    pub rope_parameters: Option<VisionRope>,
}

fn three() -> usize {
    3
}
fn two() -> f64 {
    2.0
}
fn silu() -> String {
    "silu".into()
}

impl QwenVisionConfig {
    /// Values in one patch row: `channels x temporal x patch²`.
    pub fn patch_values(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Merged tokens per window side for a frame of `mh x mw` merged tokens: Qwen2.5-VL's
    /// `window_size / merge / patch`, at most the frame (one window covers a frame smaller than a window).
    pub fn window_side(&self, mh: usize, mw: usize) -> usize {
        (self.window_size / self.spatial_merge_size.max(1) / self.patch_size.max(1)).clamp(1, mh.max(mw).max(1))
    }
}

/// How one frame's merged tokens are visited window by window (transformers' `get_vision_window_index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// Merged-token indices of one frame in window order.
    pub order: Vec<i64>,
    /// `[count, width]` patch rows (in window order) of each window, padded with 0.
    pub gather: Vec<i64>,
    /// `[count, width]` true for the real rows.
    pub valid: Vec<bool>,
    /// Windows in the frame.
    pub count: usize,
    /// Patches per full window (the batch width).
    pub width: usize,
}

impl Windows {
    /// Windows of side `side` merged tokens over an `h x w` merged grid, `unit` patches per merged token.
    pub fn new(h: usize, w: usize, side: usize, unit: usize) -> Windows {
        let side = side.max(1);
        let (nh, nw) = (h.div_ceil(side), w.div_ceil(side));
        let mut order = Vec::with_capacity(h * w);
        let mut lengths = Vec::with_capacity(nh * nw);
        for wy in 0..nh {
            for wx in 0..nw {
                let before = order.len();
                for r in wy * side..((wy + 1) * side).min(h) {
                    for c in wx * side..((wx + 1) * side).min(w) {
                        order.push((r * w + c) as i64);
                    }
                }
                lengths.push((order.len() - before) * unit);
            }
        }
        let width = side * side * unit;
        let (mut gather, mut valid) = (Vec::with_capacity(lengths.len() * width), Vec::new());
        let mut start = 0;
        for len in &lengths {
            for j in 0..width {
                gather.push(if j < *len { (start + j) as i64 } else { 0 });
                valid.push(j < *len);
            }
            start += len;
        }
        Windows { order, gather, valid, count: lengths.len(), width }
    }

    /// Where each real row of the padded `[count · width]` window batch sits, in window order.
    pub fn real_rows(&self) -> Vec<i64> {
        (0..self.valid.len() as i64).filter(|&i| self.valid[i as usize]).collect()
    }

    /// The inverse of [`Windows::order`]: for each merged token in (row, col) order, its place in window order.
    pub fn reverse(&self) -> Vec<i64> {
        let mut reverse = vec![0i64; self.order.len()];
        for (place, &token) in self.order.iter().enumerate() {
            reverse[token as usize] = place as i64;
        }
        reverse
    }
}

/// Each patch's `(row, col)` in an `h x w` patch frame, in merge-block order (`[h·w, 2]` flattened): the rotary ids.
pub fn patch_positions(h: usize, w: usize, merge: usize) -> Vec<i64> {
    let m = merge.max(1);
    let mut ids = Vec::with_capacity(2 * h * w);
    for br in 0..h / m {
        for bc in 0..w / m {
            for ir in 0..m {
                for ic in 0..m {
                    ids.push((br * m + ir) as i64);
                    ids.push((bc * m + ic) as i64);
                }
            }
        }
    }
    ids
}

/// Qwen3-VL's bilinear taps (`align_corners=True`, border taps clamped) into a `side x side` position table for an
/// `h x w` patch frame in merge-block order: `[h·w, 4]` table rows and `[h·w, 4]` weights, computed in f32 as
/// transformers does.
pub fn interpolation_taps(h: usize, w: usize, side: usize, merge: usize) -> (Vec<i64>, Vec<f32>) {
    let m = merge.max(1);
    let last = side.max(1) - 1;
    // Per axis: (floor tap, next tap clamped, weight of the next tap).
    let taps = |index: usize, size: usize| -> (usize, usize, f32) {
        let src = index as f32 * last as f32 / (size.max(2) - 1) as f32;
        let floor = src.floor();
        let f = floor as usize;
        (f.min(last), (f + 1).min(last), src - floor)
    };
    let (mut index, mut weight) = (Vec::with_capacity(4 * h * w), Vec::with_capacity(4 * h * w));
    for br in 0..h / m {
        for bc in 0..w / m {
            for ir in 0..m {
                for ic in 0..m {
                    let (r0, r1, fr) = taps(br * m + ir, h);
                    let (c0, c1, fc) = taps(bc * m + ic, w);
                    for (r, wr) in [(r0, 1.0 - fr), (r1, fr)] {
                        for (c, wc) in [(c0, 1.0 - fc), (c1, fc)] {
                            index.push((r * side + c) as i64);
                            weight.push(wr * wc);
                        }
                    }
                }
            }
        }
    }
    (index, weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_get_vision_window_index() {
        // A 3 x 5 merged grid with 2 x 2 windows: windows (0,0),(0,1),(0,2),(1,0),(1,1),(1,2) of 4,4,2,2,2,1 units.
        let w = Windows::new(3, 5, 2, 4);
        assert_eq!(w.order, vec![0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]);
        assert_eq!((w.count, w.width), (6, 16));
        let lengths: Vec<usize> = w.valid.chunks(16).map(|c| c.iter().filter(|&&v| v).count()).collect();
        assert_eq!(lengths, vec![16, 16, 8, 8, 8, 4]);
        // The third window's rows start after the first two windows' 32 patch rows.
        assert_eq!(w.gather[32..34], [32, 33]);
        // The padded batch's real rows: 16 + 16 + 8 + 8 + 8 + 4 = 60 patches; the third window's first real row is
        // at 32 in the batch, its ninth (the first padding) is skipped.
        let real = w.real_rows();
        assert_eq!(real.len(), 60);
        assert_eq!((real[32], real[40]), (32, 48));
        let reverse = w.reverse();
        assert!(reverse.iter().enumerate().all(|(t, &p)| w.order[p as usize] == t as i64));
    }

    #[test]
    fn positions_and_taps_are_in_merge_block_order() {
        // A 2 x 4 frame with 2 x 2 blocks: block (0,0) holds (0,0),(0,1),(1,0),(1,1), then block (0,1).
        assert_eq!(patch_positions(2, 4, 2), vec![0, 0, 0, 1, 1, 0, 1, 1, 0, 2, 0, 3, 1, 2, 1, 3]);
        // On a 3 x 3 table a 2 x 2 frame samples the corners exactly: all weight on one tap each.
        let (index, weight) = interpolation_taps(2, 2, 3, 2);
        let corners: Vec<i64> =
            index.chunks(4).zip(weight.chunks(4)).map(|(i, w)| i[w.iter().position(|&x| x == 1.0).unwrap()]).collect();
        assert_eq!(corners, vec![0, 2, 6, 8]);
    }
}
