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
//! The layout for the pruners is Qwen2.5-VL's (`(t, h/2, w/2)`); the family is [`QwenVl`] with
//! [`QwenGeneration::Qwen3`], which switches the prompt to per-patch timestamped spans.
//!
//! Deviation \[project\]: transformers 5.24's `Qwen3VLProcessor` replaces only the `<|video_pad|>` of the chat
//! template's `<|vision_start|><|video_pad|><|vision_end|>`, which leaves the per-patch spans nested inside an outer
//! start/end pair; the prompt here follows Qwen's own processor (and transformers <= 4.57), which replaces the whole
//! triple, so every patch span stands alone.

use super::qwen2_5_vl::{QwenGeneration, QwenVl};

/// The Qwen3-VL family from a parsed `config.json` (the same keys as Qwen2.5-VL's).
pub fn from_json(json: &serde_json::Value) -> Result<QwenVl, String> {
    QwenVl::from_json(json, QwenGeneration::Qwen3)
}
