//! In-decoder pruning (tap point T-llm): methods that decide from the decoder's own attention at a chosen layer.
//!
//! The decoder lives in `tokensieve-models`; these functions hold the scoring, selection and merging rules as
//! functions of the attention rows they consume (softmax probabilities averaged over heads, one row per query,
//! columns = the whole visible sequence) and, for the rules that merge or recycle, of the span's hidden states, so
//! the rules are unit-tested here and the models crate only recomputes those rows (ALGORITHMS.md §1.8) and applies
//! what a rule returns to hidden states, positions and the KV cache.
//!
//! Two shapes of rule exist:
//! - **prefill stages** ([`InDecoder::start`] then [`PrefillRule::stage`] before each of
//!   [`InDecoder::drop_layers`]): a [`StagePlan`] with the kept offsets of the span, optionally new hidden states for
//!   the kept rows (HoliTom's merges) and synthetic rows placed right after them (SparseVLM's recycled clusters);
//! - **decode steps** (DyCoke's dynamic KV, [`dycoke_kv::DynamicKv`]): each generated token's attention row picks
//!   the cached image keys the deeper layers attend to; the prefill is untouched.

pub mod dart;
pub mod dycoke_kv;
pub mod fastv;
pub mod holitom_inner;
pub mod pyramid_drop;
pub mod sparsevlm;
pub mod todre_stage2;

use crate::backend::Backend;
use crate::error::{PruneError, Result};
use crate::params::{parse_spec, ParamSpec, Params};
use std::ops::Range;

/// The in-decoder methods the decoder runs, in the project's spec syntax:
/// `fastv:layer=2,ratio=0.5`, `pdrop:layers=8/16/24,lambda=0.5`, `todre-stage2:tau=0.1,layer=auto`,
/// `sparsevlm:retain=192,layers=2/6/15,counts=table,recycle=true,positions=original`,
/// `holitom-inner:layer=3,r=0.5,merge=sequential`, `dycoke-kv:layer=3,prune=0.8,threshold=0.9,stable=reuse` and
/// `dart:layer=2,ratio=0.778,image=4,text=4`.
#[derive(Debug, Clone, PartialEq)]
pub enum InDecoder {
    /// FastV: one drop by the last token's attention.
    FastV(fastv::FastV),
    /// PyramidDrop: several drops, each keeping a share of the original image tokens.
    PyramidDrop(pyramid_drop::PyramidDrop),
    /// ToDRE stage 2: at the check layer, drop every visual token when text and vision ignore each other.
    TodreStage2 {
        /// Threshold on the attention shares.
        tau: f32,
        /// The check layer (0-based); `None`: `floor(7L/8)` of an `L`-layer decoder.
        layer: Option<usize>,
    },
    /// SparseVLM: drops by the text raters' attention at a few layers, recycling the best dropped tokens.
    SparseVlm(sparsevlm::SparseVlm),
    /// HoliTom's inner stage: one drop by the last token's attention, dropped tokens merged into kept ones.
    HolitomInner(holitom_inner::HolitomInner),
    /// DyCoke's decode-time dynamic KV: per generated token, the image keys deeper layers attend to.
    DycokeKv(dycoke_kv::DycokeKv),
    /// DART: pivots by key norm, then the image tokens least similar to them.
    Dart(dart::Dart),
}

/// PyramidDrop's parameters.
pub use pyramid_drop::PARAMS as PDROP_PARAMS;

/// ToDRE stage 2's parameters.
pub const STAGE2_PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "tau", default: "0.1", help: "drop when both attention shares are below it" },
    ParamSpec { name: "layer", default: "auto", help: "check layer (0-based); auto = floor(7L/8)" },
];

impl InDecoder {
    /// Parses a spec; an unknown method or a bad parameter is named in the error.
    pub fn from_spec(spec: &str) -> Result<Self> {
        let (name, given) = parse_spec(spec)?;
        match name.as_str() {
            "fastv" => Ok(InDecoder::FastV(fastv::FastV::from_pairs(&given)?)),
            "pdrop" => Ok(InDecoder::PyramidDrop(pyramid_drop::PyramidDrop::from_pairs(&given)?)),
            "todre-stage2" => {
                let p = Params::new("todre-stage2", &STAGE2_PARAMS, &given)?;
                let tau = p.float_in("tau", 0.0, 1.0)? as f32;
                let layer = match p.text("layer")? {
                    "auto" => None,
                    _ => Some(p.get::<usize>("layer")?),
                };
                Ok(InDecoder::TodreStage2 { tau, layer })
            }
            "sparsevlm" => Ok(InDecoder::SparseVlm(sparsevlm::SparseVlm::from_pairs(&given)?)),
            "holitom-inner" => Ok(InDecoder::HolitomInner(holitom_inner::HolitomInner::from_pairs(&given)?)),
            "dycoke-kv" => Ok(InDecoder::DycokeKv(dycoke_kv::DycokeKv::from_pairs(&given)?)),
            "dart" => Ok(InDecoder::Dart(dart::Dart::from_pairs(&given)?)),
            other => Err(PruneError::Param {
                method: other.to_string(),
                param: "in-decoder method".into(),
                reason: "is unknown (fastv, pdrop, todre-stage2, sparsevlm, holitom-inner, dycoke-kv, dart)".into(),
            }),
        }
    }

    /// The spec name.
    pub fn name(&self) -> &'static str {
        match self {
            InDecoder::FastV(_) => "fastv",
            InDecoder::PyramidDrop(_) => "pdrop",
            InDecoder::TodreStage2 { .. } => "todre-stage2",
            InDecoder::SparseVlm(_) => "sparsevlm",
            InDecoder::HolitomInner(_) => "holitom-inner",
            InDecoder::DycokeKv(_) => "dycoke-kv",
            InDecoder::Dart(_) => "dart",
        }
    }

    /// The layers before which tokens are dropped, in a decoder of `layers` layers. For DyCoke's decode-time rule:
    /// the first layer whose attention is restricted to the selected image keys (nothing is dropped in the
    /// prefill; see [`InDecoder::decode_time`]).
    pub fn drop_layers(&self, layers: usize) -> Vec<usize> {
        match self {
            InDecoder::FastV(f) => vec![f.layer],
            InDecoder::PyramidDrop(p) => p.stages.iter().map(|s| s.0).collect(),
            InDecoder::TodreStage2 { layer, .. } => {
                vec![layer.unwrap_or_else(|| todre_stage2::check_layer(layers)) + 1]
            }
            InDecoder::SparseVlm(s) => s.drop_layers(),
            InDecoder::HolitomInner(h) => vec![h.layer],
            InDecoder::DycokeKv(d) => vec![d.layer],
            InDecoder::Dart(d) => vec![d.layer],
        }
    }

    /// True for rules that act while decoding, not in the prefill (DyCoke's dynamic KV).
    pub fn decode_time(&self) -> bool {
        matches!(self, InDecoder::DycokeKv(_))
    }

    /// True when the layers after a drop renumber their positions without gaps: PyramidDrop by default (its
    /// official code renumbers after every stage) and SparseVLM's `positions=contiguous`; every other rule keeps
    /// the original ids (ALGORITHMS.md §1.5).
    pub fn contiguous_positions(&self) -> bool {
        match self {
            InDecoder::SparseVlm(s) => s.contiguous,
            InDecoder::PyramidDrop(p) => p.contiguous,
            _ => false,
        }
    }
}

/// Which attention rows a rule reads before each of its drops (softmax probabilities over every visible key, mean
/// over heads): the layer before's attention, or (PyramidDrop) the drop layer's own q/k on its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// The last query only, from the layer before the drop (FastV, HoliTom inner, PyramidDrop's `score=previous`;
    /// DyCoke's step row): one row.
    Last,
    /// The last query only, computed with the drop layer's own input norm, q/k projections and RoPE on its input
    /// (the previous layer's output), at the current position ids: PyramidDrop's `pdrop_rank_drop`. One row.
    OwnLast,
    /// Every query after the droppable span (ToDRE stage 2's text rows, SparseVLM's raters), causally masked.
    AfterSpan,
    /// No attention: one row holding the L1 norm of each row's keys in the layer before the drop (every KV head
    /// concatenated, after RoPE), and the stage also gets the whole sequence's hidden states through the decoder's
    /// final norm (DART's two signals).
    KeyNorms,
}

impl InDecoder {
    /// The attention rows the rule reads.
    pub fn rows(&self) -> Rows {
        match self {
            InDecoder::TodreStage2 { .. } | InDecoder::SparseVlm(_) => Rows::AfterSpan,
            InDecoder::Dart(_) => Rows::KeyNorms,
            InDecoder::PyramidDrop(p) if p.own_layer => Rows::OwnLast,
            InDecoder::FastV(_) | InDecoder::PyramidDrop(_) | InDecoder::HolitomInner(_) | InDecoder::DycokeKv(_) => {
                Rows::Last
            }
        }
    }

    /// The kept offsets within the droppable `span` at drop `stage`, from the rows [`InDecoder::rows`] names
    /// (`rows` is empty before layer 0); `original` is the span's length before the first drop. A rule that cannot
    /// decide (a row that does not cover the span) keeps every token, so a malformed row never drops content.
    ///
    /// This is the whole rule for the rules that only drop (FastV, PyramidDrop, ToDRE stage 2). SparseVLM, DART and
    /// HoliTom inner also need hidden states and DyCoke acts while decoding: for them this keeps every
    /// token; run them through [`InDecoder::start`] and [`PrefillRule::stage`] (or [`dycoke_kv::DynamicKv`]).
    pub fn select(&self, stage: usize, original: usize, rows: &[Vec<f32>], span: Range<usize>) -> Vec<usize> {
        let keep_all = || (0..span.len()).collect::<Vec<usize>>();
        match self {
            InDecoder::FastV(f) => rows.last().and_then(|r| f.select(r, span.clone()).ok()),
            InDecoder::PyramidDrop(p) => rows.last().and_then(|r| p.select(stage, original, r, span.clone()).ok()),
            InDecoder::TodreStage2 { tau, .. } => {
                let text = span.end..rows.first().map_or(span.end, Vec::len);
                todre_stage2::test(rows, &[], span.clone(), text, *tau).ok().map(|t| {
                    if t.drop_visual {
                        Vec::new()
                    } else {
                        keep_all()
                    }
                })
            }
            InDecoder::SparseVlm(_) | InDecoder::HolitomInner(_) | InDecoder::DycokeKv(_) | InDecoder::Dart(_) => None,
        }
        .unwrap_or_else(keep_all)
    }

    /// Starts one prefill: `visual` `[N, D]` and `text` `[T, D]` are the decoder's input embeddings of the span
    /// and of every row after it (SparseVLM chooses its raters from them once; the other rules ignore them).
    pub fn start<B: Backend>(&self, backend: &B, visual: &B::Matrix, text: &B::Matrix) -> Result<PrefillRule<'_>> {
        let original = backend.shape(visual).0;
        let raters = match self {
            InDecoder::SparseVlm(_) => sparsevlm::raters(backend, visual, text)?,
            _ => Vec::new(),
        };
        Ok(PrefillRule { rule: self, original, raters })
    }
}

/// What a rule decides at one prefill stage, over the span as it is at that stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan<M> {
    /// Kept offsets within the span, ascending and unique.
    pub kept: Vec<usize>,
    /// New hidden states `[kept.len(), D]` for the kept rows, in the same order (merging rules); `None` keeps them.
    pub replace: Option<M>,
    /// Synthetic rows `[e, D]` placed right after the kept span rows (recycled tokens); they join the span.
    pub extra: Option<M>,
}

impl<M> StagePlan<M> {
    /// Keeps `kept` unchanged, nothing added.
    pub fn keep(kept: Vec<usize>) -> Self {
        StagePlan { kept, replace: None, extra: None }
    }
}

/// One prefill's run of a rule: the state kept between its stages (SparseVLM's raters).
#[derive(Debug, Clone)]
pub struct PrefillRule<'r> {
    rule: &'r InDecoder,
    original: usize,
    raters: Vec<usize>,
}

impl PrefillRule<'_> {
    /// The text rows that rate (SparseVLM; indices into the rows after the span), empty for other rules.
    pub fn raters(&self) -> &[usize] {
        &self.raters
    }

    /// The plan at drop `stage`, from the rows [`InDecoder::rows`] names (computed at the layer before the drop),
    /// the span as it is now and its hidden states `hidden` `[span.len(), D]` entering the drop's layer; `normed`
    /// is the whole sequence's hidden states `[S, D]` through the decoder's final norm, which the decoder gives for
    /// [`Rows::KeyNorms`] rules (DART). The rules that only drop go through [`InDecoder::select`] (and keep every
    /// token when they cannot decide); the merging, recycling and comparing rules return typed errors for malformed
    /// rows or states (§1.7).
    pub fn stage<B: Backend>(
        &mut self,
        backend: &B,
        stage: usize,
        rows: &[Vec<f32>],
        span: Range<usize>,
        hidden: &B::Matrix,
        normed: Option<&B::Matrix>,
    ) -> Result<StagePlan<B::Matrix>> {
        match self.rule {
            InDecoder::Dart(d) => match normed {
                Some(states) => d.stage(backend, rows, span, states),
                None => Err(PruneError::Shape {
                    tensor: "dart hidden states",
                    got: vec![0],
                    expected: "the whole sequence's final-normed hidden states (Rows::KeyNorms)".into(),
                }),
            },
            InDecoder::SparseVlm(s) => s.stage(backend, stage, rows, &self.raters, span, hidden),
            InDecoder::HolitomInner(h) => match rows.last() {
                Some(row) => h.stage(backend, row, span, hidden),
                None => Ok(StagePlan::keep((0..span.len()).collect())),
            },
            rule => Ok(StagePlan::keep(rule.select(stage, self.original, rows, span))),
        }
    }
}

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

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn specs_name_their_stages() {
        let p = InDecoder::from_spec("pdrop").unwrap();
        assert_eq!(p.drop_layers(32), vec![8, 16, 24]);
        assert_eq!((p.rows(), p.contiguous_positions()), (Rows::OwnLast, true), "the official readings");
        let q = InDecoder::from_spec("pdrop:score=previous,positions=original").unwrap();
        assert_eq!((q.rows(), q.contiguous_positions()), (Rows::Last, false));
        let InDecoder::PyramidDrop(rule) = &p else { panic!() };
        assert_eq!(rule.counts(576).unwrap(), vec![288, 144, 72], "PyramidDrop's paper schedule");
        let q = InDecoder::from_spec("pdrop:layers=2/4,lambda=0.25").unwrap();
        assert_eq!(q.drop_layers(6), vec![2, 4]);
        assert!(InDecoder::from_spec("pdrop:layers=4/2").is_err(), "layers ascend");
        assert!(InDecoder::from_spec("pdrop:layers=a/b").unwrap_err().to_string().contains("layers"));
        assert_eq!(InDecoder::from_spec("todre-stage2").unwrap().drop_layers(32), vec![29]);
        assert_eq!(InDecoder::from_spec("todre-stage2:layer=3").unwrap().drop_layers(32), vec![4]);
        assert_eq!(InDecoder::from_spec("fastv:layer=3").unwrap().drop_layers(32), vec![3]);
        assert!(InDecoder::from_spec("nonesuch").unwrap_err().to_string().contains("unknown"));
    }

    #[test]
    fn sparsevlm_specs_parse_with_the_reference_defaults() {
        let rule = InDecoder::from_spec("sparsevlm").unwrap();
        assert_eq!(rule, InDecoder::SparseVlm(sparsevlm::SparseVlm::default()));
        assert_eq!(rule.drop_layers(32), vec![3, 7, 16], "layers 2, 6, 15 decide; tokens leave after them");
        assert_eq!(
            (rule.rows(), rule.name(), rule.decode_time(), rule.contiguous_positions()),
            (Rows::AfterSpan, "sparsevlm", false, false)
        );
        let InDecoder::SparseVlm(s) = InDecoder::from_spec("sparsevlm:retain=64").unwrap() else { panic!() };
        assert_eq!(s.counts, vec![66, 30, 17]);
        let custom =
            InDecoder::from_spec("sparsevlm:layers=0/1,counts=8/4,recycle=false,positions=contiguous").unwrap();
        let InDecoder::SparseVlm(c) = &custom else { panic!() };
        assert_eq!((c.layers.clone(), c.counts.clone(), c.recycle), (vec![0, 1], vec![8, 4], false));
        assert!(custom.contiguous_positions());
        assert_eq!(custom.drop_layers(4), vec![1, 2]);
        for (spec, param) in [
            ("sparsevlm:retain=100", "retain"),
            ("sparsevlm:layers=0/1", "counts"),
            ("sparsevlm:layers=2/1,counts=4/2", "layers"),
            ("sparsevlm:layers=a", "layers"),
            ("sparsevlm:layers=1,counts=0", "counts"),
            ("sparsevlm:layers=1,counts=4/2", "counts"),
            ("sparsevlm:recycle=maybe", "recycle"),
            ("sparsevlm:positions=shifted", "positions"),
            ("sparsevlm:ratio=0.5", "ratio"),
        ] {
            match InDecoder::from_spec(spec) {
                Err(PruneError::Param { method, param: p, .. }) => {
                    assert_eq!((method.as_str(), p.as_str()), ("sparsevlm", param), "{spec}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn holitom_and_dycoke_specs_parse_with_the_reference_defaults() {
        let h = InDecoder::from_spec("holitom-inner").unwrap();
        assert_eq!(h, InDecoder::HolitomInner(holitom_inner::HolitomInner { layer: 3, r: 0.5, true_mean: false }));
        assert_eq!((h.drop_layers(28), h.rows(), h.decode_time()), (vec![3], Rows::Last, false));
        assert_eq!(
            InDecoder::from_spec("holitom-inner:layer=18,r=0.25,merge=mean").unwrap(),
            InDecoder::HolitomInner(holitom_inner::HolitomInner { layer: 18, r: 0.25, true_mean: true })
        );
        let d = InDecoder::from_spec("dycoke-kv").unwrap();
        // The official code attends to the whole cache on a step whose attention did not move: `stable=full`.
        assert_eq!(d, InDecoder::DycokeKv(dycoke_kv::DycokeKv { layer: 3, prune: 0.8, threshold: 0.9, reuse: false }));
        assert_eq!((d.drop_layers(28), d.rows(), d.decode_time()), (vec![3], Rows::Last, true));
        let InDecoder::DycokeKv(reuse) =
            InDecoder::from_spec("dycoke-kv:layer=1,prune=0.5,threshold=0.5,stable=reuse").unwrap()
        else {
            panic!()
        };
        assert_eq!((reuse.layer, reuse.prune, reuse.threshold, reuse.reuse), (1, 0.5, 0.5, true));
        for (spec, method, param) in [
            ("holitom-inner:layer=0", "holitom-inner", "layer"),
            ("holitom-inner:r=1", "holitom-inner", "r"),
            ("holitom-inner:r=x", "holitom-inner", "r"),
            ("holitom-inner:merge=max", "holitom-inner", "merge"),
            ("dycoke-kv:layer=0", "dycoke-kv", "layer"),
            ("dycoke-kv:prune=1.5", "dycoke-kv", "prune"),
            ("dycoke-kv:threshold=2", "dycoke-kv", "threshold"),
            ("dycoke-kv:stable=sometimes", "dycoke-kv", "stable"),
            ("dycoke-kv:p=0.8", "dycoke-kv", "p"),
        ] {
            match InDecoder::from_spec(spec) {
                Err(PruneError::Param { method: m, param: p, .. }) => {
                    assert_eq!((m.as_str(), p.as_str()), (method, param), "{spec}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn prefill_rules_plan_their_stages() {
        use crate::CpuBackend;
        use ndarray::{array, Array2};
        // Offsets-only rules go through select, and ignore the states.
        let fastv = InDecoder::from_spec("fastv:layer=1,ratio=0.5").unwrap();
        let none = Array2::<f32>::zeros((0, 2));
        let hidden = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]];
        let mut run = fastv.start(&CpuBackend, &hidden, &none).unwrap();
        assert!(run.raters().is_empty());
        let row = vec![0.1, 0.3, 0.1, 0.2, 0.05, 0.25];
        let plan = run.stage(&CpuBackend, 0, std::slice::from_ref(&row), 1..5, &hidden, None).unwrap();
        assert_eq!(plan, StagePlan::keep(vec![0, 2]));
        // HoliTom returns merged states for its kept rows.
        let holitom = InDecoder::from_spec("holitom-inner:layer=1").unwrap();
        let plan = holitom
            .start(&CpuBackend, &hidden, &none)
            .unwrap()
            .stage(&CpuBackend, 0, &[row], 1..5, &hidden, None)
            .unwrap();
        assert_eq!(plan.kept, vec![0, 2]);
        assert_eq!(plan.replace.map(|m| m.nrows()), Some(2));
        // SparseVLM picks raters from the input embeddings once.
        let sparse = InDecoder::from_spec("sparsevlm:layers=0,counts=2").unwrap();
        let text = array![[5.0f32, 0.0], [-5.0, 0.0]];
        let mut run = sparse.start(&CpuBackend, &hidden, &text).unwrap();
        assert_eq!(run.raters(), &[0]);
        let rows = vec![vec![0.1, 0.1, 0.5, 0.2, 0.1, 0.0, 0.0], vec![0.0; 7]];
        let plan = run.stage(&CpuBackend, 0, &rows, 1..5, &hidden, None).unwrap();
        assert_eq!(plan.kept, vec![1, 2]);
        assert_eq!(plan.extra.map(|m| m.nrows()), Some(1));
    }
}
