//! Where a per-token importance score comes from when a method needs one (IDPruner's providers, ALGORITHMS.md §3.2).
//!
//! `auto` takes the first available of: the caller's importance, the CLS attention, the relevance, and finally the
//! L2 norm of the token (D-CoDe's "activation"), so a method always has a score and records which one it used.

use crate::backend::Backend;
use crate::error::{PruneError, Result, Signal};
use crate::token_set::TokenSet;

/// Names accepted by the `importance=` parameter.
pub const SOURCES: [&str; 6] = ["auto", "cls", "norm", "relevance", "external", "uniform"];

/// Returns the importance scores chosen by `source` and the name of what was used.
pub fn importance<B: Backend>(
    backend: &B,
    tokens: &TokenSet<B::Matrix>,
    source: &str,
    method: &'static str,
) -> Result<(Vec<f32>, &'static str)> {
    let missing = |signal| PruneError::MissingSignal { method, signal };
    match source {
        "cls" => Ok((tokens.cls_attention().ok_or(missing(Signal::ClsAttention))?.to_vec(), "cls")),
        "relevance" => Ok((tokens.relevance().ok_or(missing(Signal::Relevance))?.to_vec(), "relevance")),
        "external" => Ok((tokens.importance().ok_or(missing(Signal::Importance))?.to_vec(), "external")),
        "norm" => Ok((backend.row_norms(tokens.features())?, "norm")),
        "uniform" => Ok((vec![0.0; tokens.len()], "uniform")),
        _ => {
            if let Some(v) = tokens.importance() {
                Ok((v.to_vec(), "external"))
            } else if let Some(v) = tokens.cls_attention() {
                Ok((v.to_vec(), "cls"))
            } else if let Some(v) = tokens.relevance() {
                Ok((v.to_vec(), "relevance"))
            } else {
                Ok((backend.row_norms(tokens.features())?, "norm"))
            }
        }
    }
}
