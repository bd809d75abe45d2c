//! DyCoke's decode-time dynamic KV pruning: during every generation step, the new token's attention over the image
//! tokens decides which cached image keys and values the deeper layers attend to; the selection is refreshed when
//! that attention has moved.
//!
//! ```text
//! a_t = A^{(L−1)}[new token, image span]      (softmax over every cached key, mean over heads; L = dycoke_l = 3)
//! if t is the first step or cos(a_t, a_{t−1}) < 0.9:  S = top int(N·(1 − p)) of a_t    (p = 0.8 -> 20 %)
//! layers ≥ L attend to prefix + S + everything after the image span (the full cache is kept and gathered)
//! ```
//!
//! `a_{t−1}` is the previous *step's* vector, refreshed or not. The scores are those of layer `L − 1` = 2 for the
//! default `L = 3`: the official loop calls `dycoke_pruning(layer_outputs, …)` at `layer_idx == dycoke_l`, before
//! that layer runs, so `layer_outputs` still holds layer 2's output and attention; `attend` is fed that row. The
//! prefill is not pruned (DyCoke's pre-decoder part, temporal token merging, is the `dycoke` pruner). Complexity
//! `O(N log N)` per step for the ranking plus the one recomputed attention row `O(T·d)` (§1.8) and a gather of the
//! selected keys in each layer `≥ L`. Source: Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video
//! Large Language Models", CVPR 2025 (arXiv 2411.15024); official code KD-TAO/DyCoke,
//! `llava/model/language_model/modeling_qwen2.py` (`PrunableDynamicCache.update`, `update_cache`,
//! `dycoke_pruning`, and the `self.dycoke` branch of `Qwen2Model.forward`), defaults from `llava/model/builder.py`
//! and `lmms_eval/models/llava_onevision.py` (`dycoke_l=3`, `dycoke_p=0.8`). Proof of the selection:
//! `pruners/tests/official_dycoke.rs` against `tests/official/dycoke/make_dycoke.py::kv_steps`.
//!
//! Deviations from the official code:
//! - **Steps whose attention did not move**: the official code resets its gather list at layer 0 of every step
//!   and sets it only when the attention moved, so a stable step attends to the whole cache; that is the default
//!   (`stable=full`). `stable=reuse` \[project, opt-in\] keeps the previous selection instead, as the paper and
//!   ALGORITHMS.md §4.13 describe.
//! - **State per answer**: the official `attention_score` lives in the model config and carries over from one
//!   sample to the next; here the state starts empty for every prompt (the first step always selects, as the
//!   official first step does by comparing with 0).
//! - **Count**: `int(N·(1 − p))` truncates as the reference does, but never below 1 token (§1.1).
//! - **Span** (set by the models crate, not here): the official `image_token_length` is the TTM output length
//!   minus 1, so its span leaves out the last visual token; the models crate passes the whole visual span.
//! - **Ties** break by the lowest index (§1.7); cosine divides by `‖a‖‖b‖ + 1e-8` (the reference clamps the product
//!   at 1e-8). The official gather list holds the selected keys in `topk(sorted=False)` order; attention does not
//!   depend on the order of the keys, so they are ascending here.

use super::fastv::top_image_tokens;
use super::image_columns;
use crate::error::{PruneError, Result};
use crate::params::{ParamSpec, Params};
use std::ops::Range;

/// DyCoke KV settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DycokeKv {
    /// First layer that attends to the selected image keys only (`>= 1`; the scores are the previous layer's).
    pub layer: usize,
    /// Fraction of image tokens pruned from the attention of layers `>= layer`.
    pub prune: f64,
    /// Cosine below which the selection is refreshed.
    pub threshold: f32,
    /// Reuse the previous selection on a step whose attention did not move (`false`, the default: attend to the full
    /// cache, as the official code does).
    pub reuse: bool,
}

impl Default for DycokeKv {
    fn default() -> Self {
        DycokeKv { layer: 3, prune: 0.8, threshold: 0.9, reuse: false }
    }
}

/// DyCoke KV's parameters in the project's spec syntax (`dycoke-kv:layer=3,prune=0.8`).
pub const PARAMS: [ParamSpec; 4] = [
    ParamSpec { name: "layer", default: "3", help: "first decoder layer attending to the selected image keys (>= 1)" },
    ParamSpec { name: "prune", default: "0.8", help: "fraction of the image keys pruned at each step, in [0, 1)" },
    ParamSpec {
        name: "threshold",
        default: "0.9",
        help: "re-select when the attention's cosine with the last step's is below",
    },
    ParamSpec {
        name: "stable",
        default: "full",
        help: "a step whose attention did not move: full (the whole cache, as the code) | reuse (the last selection)",
    },
];

impl DycokeKv {
    /// DyCoke KV from parsed `key=value` pairs.
    pub(super) fn from_pairs(given: &[(String, String)]) -> Result<Self> {
        let p = Params::new("dycoke-kv", &PARAMS, given)?;
        let rule = DycokeKv {
            layer: p.get("layer")?,
            prune: p.get("prune")?,
            threshold: p.float_in("threshold", -1.0, 1.0)? as f32,
            reuse: p.choice("stable", &["reuse", "full"])? == "reuse",
        };
        rule.validate()?;
        Ok(rule)
    }

    /// Validates the settings.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |param: &str, reason: String| PruneError::Param { method: "dycoke-kv".into(), param: param.into(), reason };
        if self.layer == 0 {
            return Err(bad("layer", "must be at least 1 (the scores are the previous layer's)".into()));
        }
        if !(0.0..1.0).contains(&self.prune) {
            return Err(bad("prune", format!("= {} must be in [0, 1) (fraction pruned)", self.prune)));
        }
        if !(-1.0..=1.0).contains(&self.threshold) {
            return Err(bad("threshold", format!("= {} must be in [-1, 1] (a cosine)", self.threshold)));
        }
        Ok(())
    }

    /// A fresh per-answer state.
    pub fn state(&self) -> DynamicKv {
        DynamicKv { prune: self.prune, threshold: self.threshold, reuse: self.reuse, previous: None, kept: Vec::new() }
    }
}

/// State of the per-step selection over one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicKv {
    /// Fraction of image tokens pruned.
    pub prune: f64,
    /// Cosine below which the selection is refreshed.
    pub threshold: f32,
    /// Reuse the selection on a stable step (`false`: attend to everything then).
    pub reuse: bool,
    previous: Option<Vec<f32>>,
    kept: Vec<usize>,
}

impl DynamicKv {
    /// With the defaults (`p = 0.8`, threshold 0.9, the full cache on stable steps).
    pub fn new() -> Self {
        DycokeKv::default().state()
    }

    /// Image tokens kept of `n`: `int(n·(1 − p))`, at least 1 (none of none).
    pub fn keep_count(&self, n: usize) -> usize {
        ((n as f64 * (1.0 - self.prune)) as usize).clamp(n.min(1), n)
    }

    /// Feeds one step's image attention; returns the image offsets (ascending) of the current selection and whether
    /// it was refreshed by this step.
    pub fn step(&mut self, attention: &[f32]) -> Result<(&[usize], bool)> {
        if let Some(i) = attention.iter().position(|v| !v.is_finite()) {
            return Err(PruneError::NonFinite { tensor: "dycoke-kv attention", index: i, value: attention[i] });
        }
        let cos = self.previous.as_ref().filter(|p| p.len() == attention.len()).map(|p| {
            let dot: f32 = p.iter().zip(attention).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (norm(p) * norm(attention) + 1e-8)
        });
        let refresh = cos.is_none_or(|c| c < self.threshold);
        if refresh {
            self.kept = top_image_tokens(attention, self.keep_count(attention.len()));
        }
        self.previous = Some(attention.to_vec());
        Ok((&self.kept, refresh))
    }

    /// One decoding step from the attention row `row` (every visible key) of the layer before the first pruned
    /// one: the image offsets within `span` that layers `>= layer` attend to, or `None` for all of them (a stable
    /// step under `stable=full`).
    pub fn attend(&mut self, row: &[f32], span: Range<usize>) -> Result<Option<Vec<usize>>> {
        let attention = image_columns(row, &span, "dycoke-kv attention row")?;
        let reuse = self.reuse;
        let (kept, refreshed) = self.step(attention)?;
        Ok((refreshed || reuse).then(|| kept.to_vec()))
    }
}

impl Default for DynamicKv {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_only_when_attention_moves() {
        let mut kv = DycokeKv { reuse: true, ..DycokeKv::default() }.state();
        // int(10 · 0.2) truncates to 1 in floating point (1 − 0.8 = 0.19999999999999996), as in Python.
        assert_eq!(kv.keep_count(10), 1);
        assert_eq!(kv.keep_count(20), 3);
        assert_eq!(kv.keep_count(2), 1, "never below one token");
        let a = [0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0, 0.0];
        let (kept, changed) = kv.step(&a).unwrap();
        assert!(changed);
        assert_eq!(kept, &[0]);
        let (_, changed) = kv.step(&a).unwrap();
        assert!(!changed);
        let moved = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.5];
        let (kept, changed) = kv.step(&moved).unwrap();
        assert!(changed);
        assert_eq!(kept, &[9]);
        assert!(kv.step(&[f32::NAN; 10]).is_err());
    }

    #[test]
    fn stable_steps_reuse_or_attend_to_everything() {
        let rule = DycokeKv { prune: 0.5, ..DycokeKv::default() };
        // Row over 6 keys; the image span is 1..5.
        let row = [0.1, 0.4, 0.1, 0.3, 0.05, 0.05];
        let mut reuse = DycokeKv { reuse: true, ..rule }.state();
        assert_eq!(reuse.attend(&row, 1..5).unwrap(), Some(vec![0, 2]));
        assert_eq!(reuse.attend(&row, 1..5).unwrap(), Some(vec![0, 2]), "stable: the same selection");
        let mut full = rule.state();
        assert_eq!(full.attend(&row, 1..5).unwrap(), Some(vec![0, 2]));
        assert_eq!(full.attend(&row, 1..5).unwrap(), None, "stable: the whole cache, as the official code");
        assert!(full.attend(&row, 1..8).is_err());
    }
}
