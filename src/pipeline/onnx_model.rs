//! The `onnx` backend's sides of the QA engine: an export in the community (Transformers.js) layout that
//! `models/export/export_onnx.py` writes (`config.json`, tokenizer and processor files, and `onnx/vision_encoder`,
//! `onnx/embed_tokens`, `onnx/decoder_model_merged` in the chosen precision), run by ONNX Runtime on the CPU. No
//! libtorch is involved.
//!
//! Choices \[project\]:
//! - The encoder graph returns the signals at the feature layer (`attention`, `keys`); an older export without
//!   them runs every method that does not need them, and one that does gets an error naming the missing output.
//! - In-decoder pruning needs a layer's attention rows, which the merged decoder graph does not expose: the rule is
//!   refused ([`LanguageSide::refuses`]), never silently ignored.
//! - Qwen-VL exports (`models/export/qwen_onnx.py`) run one temporal patch per encoder run with grid inputs computed
//!   on the host (`tokensieve_models::qwen_grid`, shared with the libtorch tower), and their decoder takes M-RoPE's
//!   three position rows and Qwen3-VL's DeepStack rows and planes, so pre-LLM pruning keeps the original 3-D ids
//!   on this backend too.
//! - Sessions are built once at load and reused; the encoder and decoder sit behind mutexes because an ONNX Runtime
//!   run needs exclusive access, so one engine answers one question at a time. The KV cache stays in ONNX Runtime's
//!   own tensors between steps.

use super::model::{
    deepstack_rows, embeddings_matrix, placeholder_rows, DecoderShape, Decoding, DropPlan, LanguageSide, VisionSide,
};
use super::qa::QaError;
use ndarray::{Array2, ArrayView2};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use tokensieve_models::arch::{SignalRequest, TowerOutput, ViewBatch};
use tokensieve_models::onnx_decoder::{DeepStackInput, OnnxDecoder, OnnxKvCache};
use tokensieve_models::onnx_encoder::OnnxVisionEncoder;
use tokensieve_models::onnx_session::{OnnxOptions, Precision};
use tokensieve_models::positions::PositionIds;
use tokensieve_models::qwen_grid::QwenVisionConfig;
use tokensieve_pruners::in_decoder::InDecoder;

/// The export's vision encoder.
pub struct OnnxVision {
    encoder: Mutex<OnnxVisionEncoder>,
    /// The `vision_config` of a native-resolution (Qwen-VL) export, whose grid inputs the host computes.
    grid: Option<QwenVisionConfig>,
}

/// The export's token embeddings and merged decoder.
pub struct OnnxLanguage {
    decoder: Mutex<OnnxDecoder>,
    shape: DecoderShape,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another question cannot leave a session half-updated: ONNX Runtime state lives in the run.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loads an export folder in `precision`, building every session once with `options`; returns both sides and
/// OneVision's newline embedding (from `onnx/export.json`).
pub fn load(
    dir: &Path,
    config: &serde_json::Value,
    precision: Precision,
    options: &OnnxOptions,
) -> Result<(OnnxVision, OnnxLanguage, Option<Vec<f32>>), QaError> {
    let config_err =
        |name: &str, reason: String| QaError::Config { path: dir.join(name).display().to_string(), reason };
    let shape = DecoderShape::from_config(config).map_err(|r| config_err("config.json", r))?;
    let newline = match config["model_type"].as_str() {
        Some("llava_onevision") => {
            let name = "onnx/export.json";
            let text = std::fs::read_to_string(dir.join(name)).map_err(|e| config_err(name, e.to_string()))?;
            let info: ExportInfo = serde_json::from_str(&text).map_err(|e| config_err(name, e.to_string()))?;
            Some(
                info.image_newline
                    .ok_or_else(|| config_err(name, "a llava_onevision export needs `image_newline`".into()))?,
            )
        }
        _ => None,
    };
    let onnx = dir.join("onnx");
    let encoder = OnnxVisionEncoder::load(&onnx.join(precision.file("vision_encoder")), options)?;
    let grid = match encoder.takes_grid() {
        true => Some(
            <QwenVisionConfig as serde::Deserialize>::deserialize(&config["vision_config"])
                .map_err(|e| config_err("config.json", format!("vision_config: {e}")))?,
        ),
        false => None,
    };
    let decoder = OnnxDecoder::load(&onnx, precision, options)?;
    let vision = OnnxVision { encoder: Mutex::new(encoder), grid };
    Ok((vision, OnnxLanguage { decoder: Mutex::new(decoder), shape }, newline))
}

/// The keys of `onnx/export.json` the engine reads.
#[derive(serde::Deserialize)]
struct ExportInfo {
    /// OneVision's newline embedding `[D]`.
    image_newline: Option<Vec<f32>>,
}

impl VisionSide for OnnxVision {
    fn encode(&self, batch: ViewBatch<'_>, request: SignalRequest) -> Result<TowerOutput, QaError> {
        let (pixels, views, side) = match (batch, &self.grid) {
            (ViewBatch::Square { pixels, views, side }, None) => (pixels, views, side),
            (ViewBatch::Patches { patches, grid }, Some(config)) => {
                let out = locked(&self.encoder).encode_grid(patches, grid, config)?;
                let merge = config.spatial_merge_size.max(1);
                return Ok(TowerOutput {
                    features: out.features,
                    views: grid[0],
                    tokens: out.tokens,
                    dim: out.dim,
                    attention: out.attention.filter(|_| request.attention),
                    keys: out.keys.filter(|_| request.keys),
                    grid: Some((grid[1] / merge, grid[2] / merge)),
                    deepstack: out.deepstack,
                });
            }
            (batch, _) => {
                return Err(QaError::Unsupported {
                    setting: batch.describe(),
                    reason: "this export's vision encoder takes the other kind of views (square pixels for llava, \
                             native-resolution patches for Qwen-VL)"
                        .into(),
                })
            }
        };
        let out = locked(&self.encoder).encode(pixels, views, side)?;
        let (b, n, d) = (out.features.shape[0], out.features.shape[1], out.features.shape[2]);
        // Older exports wrote CLIP's keys with the CLS row first: drop it so keys align with the tokens.
        let keys = match (request.keys, out.keys) {
            (true, Some(k)) if k.shape.len() == 3 && k.shape[1] == n + 1 => {
                let w = k.shape[2];
                let rows = k.data.chunks((n + 1) * w).flat_map(|view| view[w..].iter().copied()).collect();
                Some((rows, w))
            }
            (true, Some(k)) if k.shape.len() == 3 => Some((k.data, k.shape[2])),
            _ => None,
        };
        let attention = if request.attention { out.cls_attention.map(|a| a.data) } else { None };
        Ok(TowerOutput {
            features: out.features.data,
            views: b,
            tokens: n,
            dim: d,
            attention,
            keys,
            grid: None,
            deepstack: None,
        })
    }
}

/// A prefilled prompt on ONNX Runtime.
struct OnnxDecoding<'a> {
    decoder: MutexGuard<'a, OnnxDecoder>,
    cache: OnnxKvCache,
    tokens: usize,
    layers: usize,
}

impl Decoding for OnnxDecoding<'_> {
    fn step(&mut self, token: i64) -> Result<Vec<f32>, QaError> {
        let embeds = self.decoder.embed(&[token])?;
        Ok(self.decoder.forward(&embeds, &mut self.cache)?)
    }

    fn kv_bytes(&self) -> usize {
        self.cache.bytes()
    }

    fn tokens_per_layer(&self) -> Vec<usize> {
        vec![self.tokens; self.layers]
    }
}

impl LanguageSide for OnnxLanguage {
    fn shape(&self) -> DecoderShape {
        self.shape
    }

    fn refuses(&self, _: &InDecoder) -> Option<String> {
        Some(
            "in-decoder pruning is not supported on the onnx backend (the merged decoder graph does not return \
             attention rows); use --backend torch"
                .into(),
        )
    }

    fn embed_ids(&self, ids: &[i64]) -> Result<Array2<f32>, QaError> {
        let embeds = locked(&self.decoder).embed(ids)?;
        embeddings_matrix(ids.len(), embeds.shape[2], embeds.data)
    }

    fn prefill<'a>(
        &'a self,
        ids: &[i64],
        visual: &[(i64, ArrayView2<'_, f32>)],
        deepstack: Option<ArrayView2<'_, f32>>,
        positions: &PositionIds,
        drop: Option<DropPlan<'_>>,
    ) -> Result<(Vec<f32>, Box<dyn Decoding + 'a>), QaError> {
        if let Some(plan) = drop {
            let reason = self.refuses(plan.rule).unwrap_or_default();
            return Err(QaError::Prune {
                method: plan.rule.name(),
                source: tokensieve_pruners::PruneError::Param {
                    method: plan.rule.name().into(),
                    param: "backend".into(),
                    reason,
                },
            });
        }
        let mut decoder = locked(&self.decoder);
        let mut embeds = decoder.embed(ids)?;
        let d = embeds.shape[2];
        for ((_, rows), slots) in visual.iter().zip(placeholder_rows(ids, visual, d)?) {
            for (row, p) in rows.rows().into_iter().zip(slots) {
                for (dst, src) in embeds.data[p * d..(p + 1) * d].iter_mut().zip(row) {
                    *dst = *src;
                }
            }
        }
        if matches!(positions, PositionIds::MRope(_)) && !decoder.mrope() {
            return Err(QaError::Prompt("M-RoPE position ids for an export whose decoder takes 1-D ones".into()));
        }
        let stack = deepstack.map(|planes| deepstack_input(ids, visual, planes, d)).transpose()?;
        let stack = stack.as_ref().map(|(rows, planes)| DeepStackInput { rows, planes });
        let mut cache = OnnxKvCache::default();
        let logits = decoder.forward_stacked(&embeds, Some(positions), stack, &mut cache)?;
        let decoding = OnnxDecoding { decoder, cache, tokens: ids.len(), layers: self.shape.layers };
        Ok((logits, Box::new(decoding)))
    }
}

/// The DeepStack rows (every placeholder row of the parts, in prompt order) and the planes as the graph takes them,
/// `[levels, rows, D]`, from the engine's `[rows, levels x D]`.
fn deepstack_input(
    ids: &[i64],
    visual: &[(i64, ArrayView2<'_, f32>)],
    planes: ArrayView2<'_, f32>,
    d: usize,
) -> Result<(Vec<i64>, Vec<f32>), QaError> {
    let rows: Vec<i64> = deepstack_rows(ids, visual, planes, d)?.into_iter().map(|r| r as i64).collect();
    let levels = planes.ncols() / d;
    let mut out = Vec::with_capacity(planes.len());
    for level in 0..levels {
        for row in planes.rows() {
            out.extend(row.iter().skip(level * d).take(d));
        }
    }
    Ok((rows, out))
}
