//! Position ids of a visual span after pruning (ALGORITHMS.md §1.5): kept tokens keep the ids they had in the
//! unpruned sequence, and the text after the span continues from the unpruned span's next id (the vLLM and
//! TensorRT-Edge-LLM convention), so a pruned prompt is the unpruned one with rows removed.
//!
//! Two numberings: one id per row for 1-D rotary decoders (Llama, Qwen2), or three per row for M-RoPE decoders
//! (Qwen2-VL and later; temporal, height and width ids, with `mrope_section` splitting the rotary dimensions among
//! them). The M-RoPE ids of a vision span starting at text position `s` are those of transformers 5.24's
//! `get_vision_position_ids` / `get_rope_index` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), on the grid the LLM sees (after the
//! 2 x 2 merger):
//!
//! ```text
//! token (f, r, c):  t = s + trunc(f · scale),  h = s + r,  w = s + c
//! next text id   =  s + max(H, W)
//! ```
//!
//! `scale` is 1 for images, Qwen2-VL and Qwen3-VL videos, `second_per_grid_t · tokens_per_second` for Qwen2.5-VL
//! videos (transformers multiplies and truncates with `.long()`; here the product is taken in f64). The text after a
//! video continues from `s + max(H, W)` whatever the temporal extent, as transformers 5 does; Qwen's original code
//! and transformers 4 continued after the largest id of the span, temporal ones included. Complexity `O(K)`.

use crate::error::{PruneError, Result};
use crate::layout::Layout;

/// Position ids of the rows of one prompt or span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionIds {
    /// One id per row, ascending (gaps where pruned rows were).
    Sequence(Vec<i64>),
    /// `[temporal, height, width]` ids per row (M-RoPE).
    MRope([Vec<i64>; 3]),
}

impl PositionIds {
    /// Rows covered.
    pub fn len(&self) -> usize {
        match self {
            PositionIds::Sequence(p) => p.len(),
            PositionIds::MRope(p) => p[0].len(),
        }
    }

    /// True when no row is covered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 1-D ids, or an error naming the decoder that cannot take 3-D ones.
    pub fn sequence(&self, decoder: &str) -> Result<&[i64]> {
        match self {
            PositionIds::Sequence(p) => Ok(p),
            PositionIds::MRope(_) => Err(PruneError::Param {
                method: decoder.to_string(),
                param: "positions".into(),
                reason: "are M-RoPE ids, but this decoder uses 1-D rotary positions".into(),
            }),
        }
    }
}

/// How the decoder numbers positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rope {
    /// One id per row.
    OneD,
    /// Three ids per row; `temporal_scale` multiplies the frame index (see the module docs).
    MRope {
        /// 1 for images and Qwen2-VL, `second_per_grid_t · tokens_per_second` for Qwen2.5-VL videos.
        temporal_scale: f64,
    },
}

/// The ids of a span's kept rows and the id the text after it starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanPositions {
    /// One entry (or one column of three) per kept row, in the order of `kept`.
    pub ids: PositionIds,
    /// The first id after the span, as in the unpruned sequence.
    pub next: i64,
}

/// Original position ids of the `kept` tokens (indices into the unpruned span of `layout`, or of `n` flat tokens)
/// of a span that starts at id `offset`.
///
/// Errors: an index outside the span, a layout that does not describe `n` tokens, M-RoPE over a flat layout (the
/// ids need the grid) or over several camera views (each view is its own span: call once per view), and a temporal
/// scale that is not finite and positive.
pub fn span_positions(kept: &[usize], layout: Layout, n: usize, offset: i64, rope: Rope) -> Result<SpanPositions> {
    if let Some(tokens) = layout.token_count().filter(|&t| t != n) {
        return Err(PruneError::Layout { layout: layout.to_string(), layout_tokens: tokens, tokens: n });
    }
    if let Some(&bad) = kept.iter().find(|&&i| i >= n) {
        return Err(PruneError::Shape {
            tensor: "kept",
            got: vec![bad],
            expected: format!("indices below the span's {n} tokens"),
        });
    }
    match rope {
        Rope::OneD => Ok(SpanPositions {
            ids: PositionIds::Sequence(kept.iter().map(|&i| offset + i as i64).collect()),
            next: offset + n as i64,
        }),
        Rope::MRope { temporal_scale } => {
            let Layout::Grid { views: 1, height, width, .. } = layout else {
                return Err(PruneError::Shape {
                    tensor: "grid",
                    got: match layout {
                        Layout::Grid { views, frames, height, width } => vec![views, frames, height, width],
                        Layout::Flat => vec![n],
                    },
                    expected: "(frames, height, width) of one image or video: M-RoPE ids need the grid".into(),
                });
            };
            if !(temporal_scale.is_finite() && temporal_scale > 0.0) {
                return Err(PruneError::Param {
                    method: "positions".into(),
                    param: "temporal_scale".into(),
                    reason: format!("must be finite and positive, got {temporal_scale}"),
                });
            }
            let t_of = |f: usize| (f as f64 * temporal_scale) as i64;
            let mut ids =
                [Vec::with_capacity(kept.len()), Vec::with_capacity(kept.len()), Vec::with_capacity(kept.len())];
            for pos in kept.iter().map(|&i| layout.position(i)) {
                ids[0].push(offset + t_of(pos.frame));
                ids[1].push(offset + pos.row as i64);
                ids[2].push(offset + pos.col as i64);
            }
            Ok(SpanPositions { ids: PositionIds::MRope(ids), next: offset + height.max(width) as i64 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_dimensional_decoder_refuses_m_rope_ids() {
        let flat = PositionIds::Sequence(vec![0, 1, 5]);
        assert_eq!((flat.len(), flat.sequence("llama").unwrap()), (3, [0i64, 1, 5].as_slice()));
        let mrope = PositionIds::MRope([vec![0, 1], vec![0, 0], vec![0, 1]]);
        assert_eq!(mrope.len(), 2);
        assert!(mrope.sequence("llama").unwrap_err().to_string().contains("llama"));
    }

    #[test]
    fn kept_rows_keep_their_ids_and_the_text_continues_after_the_unpruned_span() {
        let s = span_positions(&[0, 5, 9], Layout::Flat, 12, 3, Rope::OneD).unwrap();
        assert_eq!(s, SpanPositions { ids: PositionIds::Sequence(vec![3, 8, 12]), next: 15 });
    }

    #[test]
    fn m_rope_ids_follow_get_rope_index_on_the_merged_grid() {
        // A 2-frame video of 3 x 4 merged tokens starting at text position 5, Qwen2.5-VL at 2 fps:
        // second_per_grid_t = temporal_patch_size / fps = 1, tokens_per_second = 2 -> scale 2.
        let layout = Layout::frames(2, 3, 4);
        let s = span_positions(&[0, 6, 23], layout, 24, 5, Rope::MRope { temporal_scale: 2.0 }).unwrap();
        // token 6 = frame 0, row 1, col 2; token 23 = frame 1, row 2, col 3.
        assert_eq!(s.ids, PositionIds::MRope([vec![5, 5, 7], vec![5, 6, 7], vec![5, 7, 8]]));
        // max(H, W) past the start.
        assert_eq!(s.next, 5 + 4);
        // A long video: the text still continues from max(H, W), not after the temporal ids (transformers 5).
        let long = span_positions(&[], Layout::frames(10, 2, 2), 40, 0, Rope::MRope { temporal_scale: 2.0 }).unwrap();
        assert_eq!(long.next, 2);
    }

    #[test]
    fn bad_spans_are_typed_errors() {
        let mrope = Rope::MRope { temporal_scale: 1.0 };
        assert!(matches!(span_positions(&[12], Layout::Flat, 12, 0, Rope::OneD), Err(PruneError::Shape { .. })));
        assert!(matches!(span_positions(&[0], Layout::Flat, 12, 0, mrope), Err(PruneError::Shape { .. })));
        let two_views = Layout::Grid { views: 2, frames: 1, height: 2, width: 3 };
        assert!(matches!(span_positions(&[0], two_views, 12, 0, mrope), Err(PruneError::Shape { .. })));
        assert!(matches!(span_positions(&[0], Layout::frames(1, 2, 2), 5, 0, mrope), Err(PruneError::Layout { .. })));
        let nan = Rope::MRope { temporal_scale: f64::NAN };
        assert!(matches!(span_positions(&[0], Layout::frames(1, 2, 2), 4, 0, nan), Err(PruneError::Param { .. })));
    }
}
