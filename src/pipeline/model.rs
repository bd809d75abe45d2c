//! The two seams between the one QA engine ([`super::engine::Engine`]) and a backend: a vision side (pixels ->
//! projected visual tokens with the signals the pruners asked for) and a language side (prompt embeddings with the
//! kept visual tokens written in, a prefill with position ids and an optional in-decoder drop rule, then one step
//! per generated token). `torch` ([`super::torch_model`]) and `onnx` ([`super::onnx_model`]) implement them; the
//! engine, the family rules (`tokensieve_models::arch`) and the pruner chain are written once above them.
//!
//! The seam is on the host \[project\]: tokens cross it as `f32` arrays, so both backends arrange, prune and splice
//! with the same code and give the same kept indices. On CUDA this costs one copy of the projected tokens each way
//! (N x D floats, a few MB per question), small next to the tower and the prefill.

use super::qa::QaError;
use ndarray::{Array2, ArrayView2};
use tokensieve_models::arch::{SignalRequest, TowerOutput, ViewBatch};
use tokensieve_models::positions::PositionIds;
use tokensieve_pruners::in_decoder::InDecoder;

/// Pixels -> projected visual tokens, with signals.
pub trait VisionSide {
    /// Runs one batch of preprocessed views (square pixels, or native-resolution patches) through the tower and
    /// projector, computing the signals `request` asks for.
    fn encode(&self, batch: ViewBatch<'_>, request: SignalRequest) -> Result<TowerOutput, QaError>;
}

/// The decoder's shape, for the FLOPs and the record.
pub use super::flops::DecoderShape;

/// An in-decoder drop for one prefill: the rule and the droppable span of the prompt.
pub struct DropPlan<'a> {
    /// The rule (chosen and scored in the pruners crate).
    pub rule: &'a InDecoder,
    /// The prompt rows it may drop (the visual span).
    pub span: std::ops::Range<usize>,
}

/// A prefilled prompt, ready to generate.
pub trait Decoding {
    /// Runs one generated token; returns the next logits `[V]`.
    fn step(&mut self, token: i64) -> Result<Vec<f32>, QaError>;
    /// Bytes held by the KV cache.
    fn kv_bytes(&self) -> usize;
    /// Tokens each decoder layer holds (shorter after an in-decoder drop).
    fn tokens_per_layer(&self) -> Vec<usize>;
}

/// Prompt embeddings and the decoder.
pub trait LanguageSide {
    /// The decoder's shape.
    fn shape(&self) -> DecoderShape;

    /// Why this backend cannot run `rule`, if it cannot.
    fn refuses(&self, rule: &InDecoder) -> Option<String>;

    /// The input embeddings `[T, D]` of `ids` (the relevance signal of query-aware pruners).
    fn embed_ids(&self, ids: &[i64]) -> Result<Array2<f32>, QaError>;

    /// Prefills `ids` with the rows of each `(placeholder id, tokens [n, D])` written, in order, at that id's
    /// positions, at `positions`; returns the last position's logits `[V]` and the state to generate from.
    /// `deepstack` (Qwen3-VL) holds one row `[levels x D]` per placeholder row of the parts, in prompt order: level
    /// `l` is added to those rows after decoder layer `l`.
    fn prefill<'a>(
        &'a self,
        ids: &[i64],
        visual: &[(i64, ArrayView2<'_, f32>)],
        deepstack: Option<ArrayView2<'_, f32>>,
        positions: &PositionIds,
        drop: Option<DropPlan<'_>>,
    ) -> Result<(Vec<f32>, Box<dyn Decoding + 'a>), QaError>;
}

/// The placeholder rows of `ids` for each `(id, tokens)` part, checked against the tokens' count and width `d`.
pub(crate) fn placeholder_rows(
    ids: &[i64],
    visual: &[(i64, ArrayView2<'_, f32>)],
    d: usize,
) -> Result<Vec<Vec<usize>>, QaError> {
    visual
        .iter()
        .map(|(token, rows)| {
            let slots: Vec<usize> = ids.iter().enumerate().filter(|(_, &t)| t == *token).map(|(p, _)| p).collect();
            if slots.len() != rows.nrows() || rows.ncols() != d {
                return Err(QaError::Prompt(format!(
                    "{} placeholder tokens (id {token}) of width {d} for {} visual tokens of width {}",
                    slots.len(),
                    rows.nrows(),
                    rows.ncols()
                )));
            }
            Ok(slots)
        })
        .collect()
}

/// The prompt rows Qwen3-VL's DeepStack planes go to (every placeholder row of the parts, in prompt order), checked
/// against the `[rows, levels x d]` host planes.
pub(crate) fn deepstack_rows(
    ids: &[i64],
    visual: &[(i64, ArrayView2<'_, f32>)],
    planes: ArrayView2<'_, f32>,
    d: usize,
) -> Result<Vec<usize>, QaError> {
    let rows: Vec<usize> = (0..ids.len()).filter(|&i| visual.iter().any(|(token, _)| *token == ids[i])).collect();
    if planes.nrows() != rows.len() || d == 0 || !planes.ncols().is_multiple_of(d) {
        return Err(QaError::Prompt(format!(
            "DeepStack planes [{}, {}] for {} visual rows of width {d}",
            planes.nrows(),
            planes.ncols(),
            rows.len()
        )));
    }
    Ok(rows)
}

/// Token embeddings `[ids, d]` from a backend's flat `values`; the error names the counts.
pub(crate) fn embeddings_matrix(ids: usize, d: usize, values: Vec<f32>) -> Result<Array2<f32>, QaError> {
    let got = values.len();
    Array2::from_shape_vec((ids, d), values).map_err(|_| QaError::Config {
        path: "token embeddings".into(),
        reason: format!("{got} values for {ids} tokens of width {d}"),
    })
}
