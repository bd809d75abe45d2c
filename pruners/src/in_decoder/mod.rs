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
use crate::params::{parse_spec, ParamSpec, Params};
use std::ops::Range;

/// The in-decoder methods the decoder runs, in the project's spec syntax:
/// `fastv:layer=2,ratio=0.5`, `pdrop:layers=8/16/24,lambda=0.5`, `todre-stage2:tau=0.1,layer=auto`.
/// SparseVLM (text raters and token recycling), DyCoke's decode-time KV pruning and HoliTom's inner merging have their
/// rules in this module but are not wired into the decoder.
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
}

/// PyramidDrop's parameters.
pub const PDROP_PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "layers", default: "8/16/24", help: "layers where tokens are dropped, ascending, `/`-separated" },
    ParamSpec {
        name: "lambda",
        default: "0.5",
        help: "share kept at each stage (stage s keeps lambda^s of the original)",
    },
];

/// ToDRE stage 2's parameters.
pub const STAGE2_PARAMS: [ParamSpec; 2] = [
    ParamSpec { name: "tau", default: "0.1", help: "drop when both attention shares are below it" },
    ParamSpec { name: "layer", default: "auto", help: "check layer (0-based); auto = floor(7L/8)" },
];

impl InDecoder {
    /// Parses a spec; unknown or unwired methods are named.
    pub fn from_spec(spec: &str) -> Result<Self> {
        let (name, given) = parse_spec(spec)?;
        match name.as_str() {
            "fastv" => Ok(InDecoder::FastV(fastv::FastV::from_pairs(&given)?)),
            "pdrop" => {
                let p = Params::new("pdrop", &PDROP_PARAMS, &given)?;
                let lambda = p.float_in("lambda", 1e-6, 1.0)?;
                let layers: Vec<usize> = p
                    .text("layers")?
                    .split('/')
                    .map(|l| l.trim().parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| PruneError::Param {
                        method: "pdrop".into(),
                        param: "layers".into(),
                        reason: format!("= `{}` is not `/`-separated layer numbers", p.text("layers").unwrap_or("")),
                    })?;
                let stages = layers.iter().enumerate().map(|(s, &l)| (l, lambda.powi(s as i32 + 1))).collect();
                let rule = pyramid_drop::PyramidDrop { stages };
                rule.counts(1)?;
                Ok(InDecoder::PyramidDrop(rule))
            }
            "todre-stage2" => {
                let p = Params::new("todre-stage2", &STAGE2_PARAMS, &given)?;
                let tau = p.float_in("tau", 0.0, 1.0)? as f32;
                let layer = match p.text("layer")? {
                    "auto" => None,
                    _ => Some(p.get::<usize>("layer")?),
                };
                Ok(InDecoder::TodreStage2 { tau, layer })
            }
            other => Err(PruneError::Param {
                method: other.to_string(),
                param: "in-decoder method".into(),
                reason: "is not wired into the decoder (fastv, pdrop and todre-stage2 are)".into(),
            }),
        }
    }

    /// The spec name.
    pub fn name(&self) -> &'static str {
        match self {
            InDecoder::FastV(_) => "fastv",
            InDecoder::PyramidDrop(_) => "pdrop",
            InDecoder::TodreStage2 { .. } => "todre-stage2",
        }
    }

    /// The layers before which tokens are dropped, in a decoder of `layers` layers.
    pub fn drop_layers(&self, layers: usize) -> Vec<usize> {
        match self {
            InDecoder::FastV(f) => vec![f.layer],
            InDecoder::PyramidDrop(p) => p.stages.iter().map(|s| s.0).collect(),
            InDecoder::TodreStage2 { layer, .. } => {
                vec![layer.unwrap_or_else(|| todre_stage2::check_layer(layers)) + 1]
            }
        }
    }
}

/// Which attention rows a rule reads at the layer before each of its drops (softmax probabilities over every
/// visible key, mean over heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// The last query only (FastV, PyramidDrop): one row.
    Last,
    /// Every query after the droppable span (ToDRE stage 2's text rows), causally masked.
    AfterSpan,
}

impl InDecoder {
    /// The attention rows the rule reads.
    pub fn rows(&self) -> Rows {
        match self {
            InDecoder::TodreStage2 { .. } => Rows::AfterSpan,
            InDecoder::FastV(_) | InDecoder::PyramidDrop(_) => Rows::Last,
        }
    }

    /// The kept offsets within the droppable `span` at drop `stage`, from the rows [`InDecoder::rows`] names
    /// (`rows` is empty before layer 0); `original` is the span's length before the first drop. A rule that cannot
    /// decide (a row that does not cover the span) keeps every token, so a malformed row never drops content.
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
        }
        .unwrap_or_else(keep_all)
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
        let InDecoder::PyramidDrop(rule) = &p else { panic!() };
        assert_eq!(rule.counts(576).unwrap(), vec![288, 144, 72], "PyramidDrop's paper schedule");
        let q = InDecoder::from_spec("pdrop:layers=2/4,lambda=0.25").unwrap();
        assert_eq!(q.drop_layers(6), vec![2, 4]);
        assert!(InDecoder::from_spec("pdrop:layers=4/2").is_err(), "layers ascend");
        assert!(InDecoder::from_spec("pdrop:layers=a/b").unwrap_err().to_string().contains("layers"));
        assert_eq!(InDecoder::from_spec("todre-stage2").unwrap().drop_layers(32), vec![29]);
        assert_eq!(InDecoder::from_spec("todre-stage2:layer=3").unwrap().drop_layers(32), vec![4]);
        assert_eq!(InDecoder::from_spec("fastv:layer=3").unwrap().drop_layers(32), vec![3]);
        assert!(InDecoder::from_spec("sparsevlm").unwrap_err().to_string().contains("not wired"));
    }
}
