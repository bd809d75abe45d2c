//! In-decoder pruning (tap point T-llm): methods that decide from the decoder's own attention at a chosen layer.
//!
//! The decoder lives in `tokensieve-models`; these functions hold the scoring and selection rules as functions of
//! the attention rows they consume (softmax probabilities averaged over heads, one row per query, columns = the
//! whole visible sequence), so the rules are unit-tested here and the models crate only recomputes those rows
//! (ALGORITHMS.md §1.8) and applies the kept indices to hidden states and the KV cache.

pub mod dycoke_kv;
pub mod fastv;
pub mod holitom_inner;
pub mod pyramid_drop;
pub mod sparsevlm;
pub mod todre_stage2;

use crate::error::{PruneError, Result};
use std::ops::Range;

/// The image-token columns of an attention row, checked against the row length and for finiteness.
pub(crate) fn image_columns<'a>(row: &'a [f32], span: &Range<usize>, name: &'static str) -> Result<&'a [f32]> {
    if span.end > row.len() || span.start > span.end {
        return Err(PruneError::Shape {
            tensor: name,
            got: vec![row.len()],
            expected: format!("a row covering the image span {}..{}", span.start, span.end),
        });
    }
    if let Some(i) = row.iter().position(|v| !v.is_finite()) {
        return Err(PruneError::NonFinite { tensor: name, index: i, value: row[i] });
    }
    Ok(&row[span.clone()])
}
