//! Qwen3-VL (`model_type: qwen3_vl`, transformers' `Qwen3VLForConditionalGeneration`): Qwen2.5-VL's native
//! resolution and 2 x 2 merged tokens (patch 16, so sides are multiples of 32), with three differences the
//! pipeline sees:
//!
//! - Video: every temporal patch is its own `<|vision_start|> <|video_pad|>... <|vision_end|>` span, preceded by its
//!   time as text, `<{t:.1} seconds>` with `t` the mean timestamp of the patch's frames (Qwen's processor and
//!   transformers' `Qwen3VLProcessor._calculate_timestamps`). M-RoPE numbers each patch as a one-frame grid whose
//!   temporal id is the position where it starts (`get_rope_index` splits `video_grid_thw` per frame), so time is
//!   carried by the timestamp tokens, not by `second_per_grid_ts`. When pruning keeps a different count per
//!   temporal patch, each span holds its own kept count and keeps its timestamp (a patch whose tokens are all
//!   dropped keeps `<t seconds><|vision_start|><|vision_end|>`).
//! - DeepStack: the tower returns one more plane of merged tokens per `deepstack_visual_indexes` entry, which the
//!   decoder adds to the visual rows after its first layers. Planes follow the kept tokens through the chain.
//! - Interleaved M-RoPE in the decoder (`llama::MRope`), q/k head norms, an explicit `head_dim`.
//!
//! The layout for the pruners is Qwen2.5-VL's (`(t, h/2, w/2)`, [`super::qwen2_5_vl`]).
//!
//! Deviation \[project\]: transformers 5.24's `Qwen3VLProcessor` replaces only the `<|video_pad|>` of the chat
//! template's `<|vision_start|><|video_pad|><|vision_end|>`, which leaves the per-patch spans nested inside an outer
//! start/end pair; the prompt here follows Qwen's own processor (and transformers <= 4.57), which replaces the whole
//! triple, so every patch span stands alone.

use super::qwen2_5_vl::{arrange_native, Qwen25VlConfig};
use super::{AnyResCut, Family, MediaKind, PromptSpans, TowerOutput, ViewPlan, VisualTokens};

/// The Qwen3-VL family.
pub struct Qwen3Vl {
    /// Its `config.json` keys (the same names as Qwen2.5-VL's; `tokens_per_second` is unused).
    pub config: Qwen25VlConfig,
}

impl Qwen3Vl {
    /// Reads the family's keys from a parsed `config.json`.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, String> {
        use serde::Deserialize;
        let config = Qwen25VlConfig::deserialize(json).map_err(|e| format!("qwen3_vl config: {e}"))?;
        if config.vision_config.spatial_merge_size == 0 || config.vision_config.patch_size == 0 {
            return Err("qwen3_vl config: patch_size and spatial_merge_size must be positive".into());
        }
        Ok(Qwen3Vl { config })
    }
}

impl Family for Qwen3Vl {
    fn name(&self) -> &'static str {
        "qwen3_vl"
    }

    fn image_size(&self) -> usize {
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
        Some(PromptSpans {
            start: (self.config.vision_start_token_id, "<|vision_start|>"),
            end: "<|vision_end|>",
            tokens_per_second: 1.0,
            temporal_patch: self.config.vision_config.temporal_patch_size,
            timestamps: true,
        })
    }
}
