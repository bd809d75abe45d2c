//! Qwen2.5-VL (`model_type: qwen2_5_vl`, transformers' `Qwen2_5_VLForConditionalGeneration`): images and video at
//! their native resolution (the processor's `smart_resize` to multiples of `patch_size · spatial_merge_size`),
//! video in temporal patches of `temporal_patch_size` frames, and the 2 x 2 merger's tokens as the visual tokens.
//! The grid the pruners see is `(t, h/2, w/2)`: one frame per temporal patch of a video, one view per image.
//!
//! In the prompt every image or video is `<|vision_start|>` + one `<|image_pad|>` (`<|video_pad|>`) per kept token +
//! `<|vision_end|>`, and the decoder numbers positions with M-RoPE: each token keeps its `(t, h, w)` ids of
//! transformers' `get_rope_index`, with the temporal id of a video scaled by `second_per_grid_t · tokens_per_second`
//! (`tokensieve_pruners::positions`). No newline embedding.

use super::{
    keys_matrix, matrix, AnyResCut, Family, MediaKind, Newline, PromptSpans, TowerOutput, ViewPlan, VisualTokens,
};
use serde::Deserialize;
use tokensieve_pruners::Layout;

/// The `vision_config` keys the visual-token layout needs.
#[derive(Debug, Clone, Deserialize)]
pub struct QwenVisionGeometry {
    /// Spatial patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// The merger's block side.
    pub spatial_merge_size: usize,
    /// Temporal position ids per second of video.
    #[serde(default = "two")]
    pub tokens_per_second: f64,
}

fn two() -> f64 {
    2.0
}

/// The keys of a `qwen2_5_vl` `config.json` the layout and the prompt need (transformers' names).
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen25VlConfig {
    /// `<|image_pad|>`.
    pub image_token_id: i64,
    /// `<|video_pad|>`.
    pub video_token_id: i64,
    /// `<|vision_start|>`.
    pub vision_start_token_id: i64,
    /// `<|vision_end|>`.
    pub vision_end_token_id: i64,
    /// The tower's geometry.
    pub vision_config: QwenVisionGeometry,
}

/// Which Qwen-VL generation a native-resolution family is: all that differs for the pipeline (the towers and
/// decoders differ in `qwen_vision` and `llama`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QwenGeneration {
    /// Qwen2.5-VL: one span per video, its temporal ids scaled by `tokens_per_second`.
    Qwen25,
    /// Qwen3-VL: one span per temporal patch after its timestamp ([`super::qwen3_vl`]).
    Qwen3,
}

impl QwenGeneration {
    /// The `model_type` of its `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            QwenGeneration::Qwen25 => "qwen2_5_vl",
            QwenGeneration::Qwen3 => "qwen3_vl",
        }
    }

    /// The generation of a `model_type`, if it is one of the two.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        [QwenGeneration::Qwen25, QwenGeneration::Qwen3].into_iter().find(|g| g.model_type() == model_type)
    }
}

/// The Qwen2.5-VL and Qwen3-VL families (the same `config.json` keys, the same native-resolution views).
pub struct QwenVl {
    /// Its `config.json` keys (Qwen3-VL leaves `tokens_per_second` unused).
    pub config: Qwen25VlConfig,
    /// Which of the two.
    pub generation: QwenGeneration,
}

impl QwenVl {
    /// Reads the family's keys from a parsed `config.json`.
    pub fn from_json(json: &serde_json::Value, generation: QwenGeneration) -> Result<Self, String> {
        let name = generation.model_type();
        let config = Qwen25VlConfig::deserialize(json).map_err(|e| format!("{name} config: {e}"))?;
        if config.vision_config.spatial_merge_size == 0 || config.vision_config.patch_size == 0 {
            return Err(format!("{name} config: patch_size and spatial_merge_size must be positive"));
        }
        Ok(QwenVl { config, generation })
    }
}

impl Family for QwenVl {
    fn name(&self) -> &'static str {
        self.generation.model_type()
    }

    fn image_size(&self) -> usize {
        // No square input: views are cut at native resolution ([`ViewPlan::Patches`]).
        0
    }

    fn view_plan(&self, _: MediaKind, _: usize) -> ViewPlan {
        let g = &self.config.vision_config;
        ViewPlan::Patches { patch: g.patch_size, merge: g.spatial_merge_size, temporal: g.temporal_patch_size }
    }

    fn arrange(&self, out: TowerOutput, kind: MediaKind, _: Option<AnyResCut>) -> Result<VisualTokens, String> {
        arrange_native(&self.config, out, kind)
    }

    fn prompt_spans(&self) -> Option<PromptSpans> {
        let qwen3 = self.generation == QwenGeneration::Qwen3;
        Some(PromptSpans {
            start: (self.config.vision_start_token_id, "<|vision_start|>"),
            end: "<|vision_end|>",
            // Qwen3-VL's temporal ids are not scaled: time is in the timestamp text.
            tokens_per_second: if qwen3 { 1.0 } else { self.config.vision_config.tokens_per_second },
            temporal_patch: self.config.vision_config.temporal_patch_size,
            timestamps: qwen3,
        })
    }
}

/// The merged tokens of a native-resolution Qwen-VL tower as the pruners see them: a video's temporal patches as the
/// frames of one grid, images as views of one frame each; no newline. Shared by Qwen2.5-VL and Qwen3-VL.
pub(crate) fn arrange_native(
    config: &Qwen25VlConfig,
    out: TowerOutput,
    kind: MediaKind,
) -> Result<VisualTokens, String> {
    out.check()?;
    let (views, n) = (out.views, out.tokens);
    let (height, width) = out.grid.ok_or("Qwen-VL tower output without its merged grid")?;
    if height * width != n {
        return Err(format!("a merged grid of {height} x {width} for {n} tokens per view"));
    }
    let (layout, placeholder) = match kind {
        MediaKind::Video => (Layout::frames(views, height, width), (config.video_token_id, "<|video_pad|>")),
        MediaKind::Images => {
            (Layout::Grid { views, frames: 1, height, width }, (config.image_token_id, "<|image_pad|>"))
        }
    };
    let deepstack = match out.deepstack {
        Some((planes, levels)) => Some(matrix(planes, levels * out.dim)?),
        None => None,
    };
    Ok(VisualTokens {
        features: matrix(out.features, out.dim)?,
        attention: out.attention,
        keys: keys_matrix(out.keys)?,
        layout: Some(layout),
        units: (views, n),
        newline: Newline::None,
        placeholder,
        anyres: None,
        deepstack,
        ragged: None,
    })
}
