//! The `torch` backend's sides of the QA engine: a LLaVA / LLaVA-OneVision checkpoint
//! ([`tokensieve_models::llava::Llava`]) or a Qwen2.5-VL / Qwen3-VL one
//! ([`tokensieve_models::qwen_vision::QwenVision`] and its M-RoPE decoder, with Qwen3-VL's DeepStack planes) on
//! libtorch, CUDA when available. The tower runs only up to the feature layer and returns the signals asked for;
//! the decoder runs every in-decoder rule (it recomputes the attention rows a rule reads at the layer before each
//! drop).
//!
//! Prefill rules (FastV, PyramidDrop, ToDRE stage 2, SparseVLM, HoliTom inner) run as a
//! [`PrefillPlan`]: at each stage the pruners' [`PrefillRule`] reads the rows and the span's hidden states on the
//! tch backend (on the decoder's device, no host copy) and returns the kept rows, HoliTom's merged states or
//! SparseVLM's recycled tokens. DyCoke's dynamic KV is decode-time: the prefill is plain and the per-answer state
//! ([`tokensieve_pruners::in_decoder::dycoke_kv::DynamicKv`]) lives in the [`Decoding`] this prefill returns, which
//! hands the decoder a [`StepKeys`] for every generated token.

use super::model::{deepstack_rows, embeddings_matrix, DecoderShape, Decoding, DropPlan, LanguageSide, VisionSide};
use super::qa::QaError;
use ndarray::{Array2, ArrayView2};
use std::rc::Rc;
use tch::{Device, Kind, Tensor};
use tokensieve_models::arch::{SignalRequest, TowerOutput, ViewBatch};
use tokensieve_models::linear::DecoderWeights;
use tokensieve_models::llama::Llama;
use tokensieve_models::llama::{
    DeepStack, KvCache, LayerPlan, LlamaError, PositionMode, PrefillPlan, RuleError, StageView, StepKeys, StepView,
};
use tokensieve_models::llava::{merge_at, Llava, LlavaError};
use tokensieve_models::positions::PositionIds;
use tokensieve_models::qwen_vision::QwenVision;
use tokensieve_models::runtime::auto_dtype;
use tokensieve_models::safetensors::Checkpoint;
use tokensieve_pruners::in_decoder::dycoke_kv::DynamicKv;
use tokensieve_pruners::in_decoder::{InDecoder, PrefillRule};
use tokensieve_pruners::{PruneError, TchBackend};

/// A loaded checkpoint: LLaVA / LLaVA-OneVision (CLIP or SigLIP tower + projector), or Qwen2.5-VL (its own tower
/// with the merger), each with its Llama/Qwen2 decoder.
enum Model {
    Llava(Llava),
    Qwen { vision: QwenVision, text: Llama },
}

impl Model {
    /// The decoder.
    fn text(&self) -> &Llama {
        match self {
            Model::Llava(m) => &m.text,
            Model::Qwen { text, .. } => text,
        }
    }

    fn text_mut(&mut self) -> &mut Llama {
        match self {
            Model::Llava(m) => &mut m.text,
            Model::Qwen { text, .. } => text,
        }
    }
}

/// The vision tower and projector of a loaded checkpoint.
pub struct TorchVision {
    model: Rc<Model>,
    device: Device,
}

/// The language model of a loaded checkpoint.
pub struct TorchLanguage {
    model: Rc<Model>,
    device: Device,
}

/// A checkpoint loaded by [`load`].
pub struct Loaded {
    /// The tower and projector.
    pub vision: TorchVision,
    /// The language model.
    pub language: TorchLanguage,
    /// OneVision's newline embedding.
    pub newline: Option<Vec<f32>>,
    /// The compute dtype picked.
    pub dtype: Kind,
}

/// Loads `dir` (whose parsed `config.json` is `config`: its `model_type` picks the model) on `device` in `dtype`
/// (`None`: [`tokensieve_models::runtime::auto_dtype`] of the checkpoint's stored dtype) with the decoder's linear
/// weights held as `weights`; returns both sides, OneVision's newline embedding
/// and the compute dtype. Int8 weights are a CPU mode: on another device they are refused before anything loads.
pub fn load(
    dir: &std::path::Path,
    config: &serde_json::Value,
    device: Device,
    dtype: Option<Kind>,
    weights: DecoderWeights,
) -> Result<Loaded, QaError> {
    if weights == DecoderWeights::Int8 && device != Device::Cpu {
        return Err(QaError::Unsupported {
            setting: format!("int8 decoder weights on {device:?}"),
            reason: "they run libtorch's CPU int8 kernel; compute in bf16 or f16 on a GPU".into(),
        });
    }
    let dtype = match dtype {
        Some(kind) => kind,
        None => auto_dtype(Checkpoint::open(dir).map_err(LlavaError::from)?.float_dtype(), device),
    };
    let mut model = match config["model_type"].as_str() {
        Some("qwen2_5_vl" | "qwen3_vl") => Model::Qwen {
            vision: QwenVision::load_as(dir, device, dtype)?,
            text: Llama::from_hf_dir_as(dir, device, dtype)?,
        },
        _ => Model::Llava(Llava::load_as(dir, device, dtype)?),
    };
    model.text_mut().set_weights(weights)?;
    let model = Rc::new(model);
    let newline = match &*model {
        Model::Llava(Llava { onevision: Some(ov), .. }) => Some(host(&ov.newline)?),
        _ => None,
    };
    Ok(Loaded {
        vision: TorchVision { model: model.clone(), device },
        language: TorchLanguage { model, device },
        newline,
        dtype,
    })
}

/// Turns libtorch's out-of-memory failures (CUDA's `CUDA out of memory`, the CPU allocator's `can't allocate memory`)
/// into [`QaError::OutOfMemory`] naming the stage and its batch; other errors pass unchanged.
fn out_of_memory(stage: &'static str, batch: String, device: Device) -> impl FnOnce(QaError) -> QaError {
    move |e| {
        if !matches!(e, QaError::Torch(_) | QaError::Decoder(_) | QaError::Model(_) | QaError::QwenVision(_)) {
            return e;
        }
        let text = e.to_string();
        let lower = text.to_ascii_lowercase();
        // CUDA's caching allocator says "out of memory"; the CPU allocator "can't allocate memory".
        if ["out of memory", "not enough memory", "can't allocate memory"].iter().any(|w| lower.contains(w)) {
            let first = text.lines().next().unwrap_or_default();
            let detail =
                first.trim_start_matches("libtorch: ").trim_start_matches("Internal torch error: ").to_string();
            QaError::OutOfMemory { device: format!("{device:?}"), stage, batch, detail }
        } else {
            e
        }
    }
}

/// A tensor's values as f32 on the host.
fn host(t: &Tensor) -> Result<Vec<f32>, QaError> {
    Ok(Vec::try_from(t.f_to_kind(Kind::Float)?.f_reshape([-1])?)?)
}

impl VisionSide for TorchVision {
    fn encode(&self, batch: ViewBatch<'_>, request: SignalRequest) -> Result<TowerOutput, QaError> {
        self.encode_on_device(batch, request).map_err(out_of_memory("encode", batch.describe(), self.device))
    }
}

impl TorchVision {
    fn encode_on_device(&self, batch: ViewBatch<'_>, request: SignalRequest) -> Result<TowerOutput, QaError> {
        let (features, attention, keys, grid, deepstack) = match (&*self.model, batch) {
            (Model::Llava(model), ViewBatch::Square { pixels, views, side }) => {
                let batch = Tensor::from_slice(pixels)
                    .f_reshape([views as i64, 3, side as i64, side as i64])?
                    .f_to_device(self.device)?;
                let tap = model.encode_views(&batch, request)?;
                (tap.features, tap.attention, tap.keys, None, Vec::new())
            }
            (Model::Qwen { vision, .. }, ViewBatch::Patches { patches, grid }) => {
                let values = vision.config.patch_values();
                let rows =
                    Tensor::from_slice(patches).f_reshape([(patches.len() / values.max(1)) as i64, values as i64])?;
                let tap = vision.encode(&rows, grid, request)?;
                let merge = vision.config.spatial_merge_size;
                let grid = Some((grid[1] / merge, grid[2] / merge));
                (tap.features, tap.attention, tap.keys, grid, tap.deepstack)
            }
            (_, batch) => {
                return Err(QaError::Unsupported {
                    setting: batch.describe(),
                    reason: "this checkpoint's tower takes the other kind of views".into(),
                })
            }
        };
        let (b, n, d) = features.size3()?;
        let keys = match &keys {
            Some(k) => Some((host(k)?, k.size()[2] as usize)),
            None => None,
        };
        Ok(TowerOutput {
            features: host(&features)?,
            views: b as usize,
            tokens: n as usize,
            dim: d as usize,
            attention: attention.as_ref().map(host).transpose()?,
            keys,
            grid,
            // Each token's levels side by side: [views, tokens, levels x dim].
            deepstack: match deepstack.len() {
                0 => None,
                levels => Some((host(&Tensor::f_cat(&deepstack, 2)?)?, levels)),
            },
        })
    }
}

/// Row-major rows of a host matrix as a tensor on `device`.
fn rows_tensor(rows: ArrayView2<'_, f32>, device: Device) -> Result<Tensor, QaError> {
    let (n, d) = rows.dim();
    let data = rows.as_standard_layout();
    let values = data.as_slice().unwrap_or_default();
    Ok(Tensor::from_slice(values).f_reshape([n as i64, d as i64])?.f_to_device(device)?)
}

/// A decode-time rule's state over one answer (DyCoke's dynamic KV).
struct DecodeKeys {
    /// The rule's name, for errors.
    method: &'static str,
    /// The first layer whose attention is restricted.
    layer: usize,
    /// The image span in cache positions.
    span: std::ops::Range<usize>,
    /// The selection state, refreshed per step.
    state: DynamicKv,
}

/// A prefilled prompt on libtorch.
struct TorchDecoding<'a> {
    model: &'a Model,
    cache: KvCache,
    device: Device,
    tokens_per_layer: Vec<usize>,
    keys: Option<DecodeKeys>,
}

/// A rule's error back out of the decoder: the pruners' typed error when that is what the rule returned.
fn rule_error(method: &'static str, e: LlamaError) -> QaError {
    match e {
        LlamaError::Rule(source) => match source.downcast::<PruneError>() {
            Ok(source) => QaError::Prune { method, source: *source },
            Err(other) => QaError::Decoder(LlamaError::Rule(other)),
        },
        other => QaError::Decoder(other),
    }
}

impl Decoding for TorchDecoding<'_> {
    fn step(&mut self, token: i64) -> Result<Vec<f32>, QaError> {
        let cached = self.cache.layer_len(0);
        self.step_on_device(token).map_err(out_of_memory("generate", format!("{cached} cached positions"), self.device))
    }

    fn kv_bytes(&self) -> usize {
        self.cache.bytes()
    }

    fn tokens_per_layer(&self) -> Vec<usize> {
        self.tokens_per_layer.clone()
    }
}

impl TorchDecoding<'_> {
    fn step_on_device(&mut self, token: i64) -> Result<Vec<f32>, QaError> {
        let ids = Tensor::from_slice(&[token]).f_unsqueeze(0)?.f_to_device(self.device)?;
        let Some(keys) = self.keys.as_mut() else {
            return host(&self.model.text().forward(&ids, &mut self.cache)?);
        };
        let state = &mut keys.state;
        let mut select =
            |view: StepView<'_>| -> Result<Option<Vec<usize>>, RuleError> { Ok(state.attend(view.row, view.span)?) };
        let step = StepKeys { layer: keys.layer, span: keys.span.clone(), select: &mut select };
        let logits = self
            .model
            .text()
            .forward_step(&ids, &mut self.cache, Some(step))
            .map_err(|e| rule_error(keys.method, e))?;
        host(&logits)
    }
}

impl LanguageSide for TorchLanguage {
    fn shape(&self) -> DecoderShape {
        let c = &self.model.text().config;
        DecoderShape {
            hidden: c.hidden,
            ffn: self.model.text().ffn_size(),
            layers: c.layers,
            heads: c.heads,
            kv_heads: c.kv_heads,
        }
    }

    fn refuses(&self, _: &InDecoder) -> Option<String> {
        None
    }

    fn embed_ids(&self, ids: &[i64]) -> Result<Array2<f32>, QaError> {
        let t = Tensor::from_slice(ids).f_unsqueeze(0)?.f_to_device(self.device)?;
        let embeds = self.model.text().embed(&t)?;
        embeddings_matrix(ids.len(), embeds.size()[2] as usize, host(&embeds)?)
    }

    fn prefill<'a>(
        &'a self,
        ids: &[i64],
        visual: &[(i64, ArrayView2<'_, f32>)],
        deepstack: Option<ArrayView2<'_, f32>>,
        positions: &PositionIds,
        drop: Option<DropPlan<'_>>,
    ) -> Result<(Vec<f32>, Box<dyn Decoding + 'a>), QaError> {
        self.prefill_on_device(ids, visual, deepstack, positions, drop).map_err(out_of_memory(
            "prefill",
            format!("{} tokens", ids.len()),
            self.device,
        ))
    }
}

impl TorchLanguage {
    /// The decoder's [`DeepStack`]: the placeholder rows of every part in prompt order and one `[rows, D]` plane
    /// per level, cut from the `[rows, levels x D]` host planes.
    fn deepstack(
        &self,
        ids: &[i64],
        visual: &[(i64, ArrayView2<'_, f32>)],
        planes: ArrayView2<'_, f32>,
    ) -> Result<DeepStack, QaError> {
        let d = self.model.text().config.hidden;
        let rows = deepstack_rows(ids, visual, planes, d)?;
        let all = rows_tensor(planes, self.device)?;
        let levels = (planes.ncols() / d) as i64;
        let planes = (0..levels).map(|l| all.f_narrow(1, l * d as i64, d as i64)).collect::<Result<_, _>>()?;
        Ok(DeepStack { rows, planes })
    }

    fn prefill_on_device<'a>(
        &'a self,
        ids: &[i64],
        visual: &[(i64, ArrayView2<'_, f32>)],
        deepstack: Option<ArrayView2<'_, f32>>,
        positions: &PositionIds,
        drop: Option<DropPlan<'_>>,
    ) -> Result<(Vec<f32>, Box<dyn Decoding + 'a>), QaError> {
        let _guard = tch::no_grad_guard();
        let stack = deepstack.map(|planes| self.deepstack(ids, visual, planes)).transpose()?;
        let ids_t = Tensor::from_slice(ids).f_unsqueeze(0)?.f_to_device(self.device)?;
        let tensors = visual
            .iter()
            .map(|(token, rows)| Ok((*token, rows_tensor(rows.view(), self.device)?)))
            .collect::<Result<Vec<_>, QaError>>()?;
        let parts: Vec<(i64, &Tensor)> = tensors.iter().map(|(t, r)| (*t, r)).collect();
        let embeds = merge_at(self.model.text(), &ids_t, &parts)?;
        let layers = self.model.text().config.layers;
        let mut cache = KvCache::default();
        let mut keys = None;
        let logits = match drop {
            Some(DropPlan { rule: InDecoder::DycokeKv(kv), span }) => {
                keys = Some(DecodeKeys { method: "dycoke-kv", layer: kv.layer, span, state: kv.state() });
                self.model.text().forward_embeds_stacked(embeds, positions, &mut cache, None, stack)?
            }
            Some(DropPlan { rule, span }) => {
                let method = rule.name();
                let backend = TchBackend::new(self.device);
                let pruning = |source: PruneError| QaError::Prune { method, source };
                let prompt = backend.adopt(&embeds.f_select(0, 0)?).map_err(pruning)?;
                let rows_after = prompt.size()[0] - span.end as i64;
                let visual = prompt.f_narrow(0, span.start as i64, span.len() as i64)?;
                let text = prompt.f_narrow(0, span.end as i64, rows_after.max(0))?;
                let mut run: PrefillRule<'_> = rule.start(&backend, &visual, &text).map_err(pruning)?;
                let mut stage = |view: StageView<'_>| -> Result<LayerPlan, RuleError> {
                    let hidden = backend.adopt(view.hidden)?;
                    let normed = view.normed.map(|n| backend.adopt(n)).transpose()?;
                    let plan = run.stage(&backend, view.stage, view.rows, view.span, &hidden, normed.as_ref())?;
                    Ok(LayerPlan { kept: plan.kept, replace: plan.replace, extra: plan.extra })
                };
                let plan = PrefillPlan {
                    layers: rule.drop_layers(layers),
                    span,
                    rows: rule.rows(),
                    rule: &mut stage,
                    positions: if rule.contiguous_positions() {
                        PositionMode::Contiguous
                    } else {
                        PositionMode::Original
                    },
                };
                self.model
                    .text()
                    .forward_embeds_stacked(embeds, positions, &mut cache, Some(plan), stack)
                    .map_err(|e| rule_error(method, e))?
            }
            None => self.model.text().forward_embeds_stacked(embeds, positions, &mut cache, None, stack)?,
        };
        let tokens_per_layer = (0..layers).map(|l| cache.layer_len(l) as usize).collect();
        let decoding = TorchDecoding { model: &self.model, cache, device: self.device, tokens_per_layer, keys };
        Ok((host(&logits)?, Box::new(decoding)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_memory_names_the_stage_and_the_batch() {
        // libtorch's own CPU allocator failure (an exabyte), then CUDA's wording.
        let cpu = Tensor::f_zeros([1i64 << 58], (Kind::Float, Device::Cpu)).map(|_| ()).unwrap_err();
        let e = out_of_memory("encode", "64 views of 384x384".into(), Device::Cpu)(QaError::Torch(cpu));
        let text = e.to_string();
        assert!(matches!(e, QaError::OutOfMemory { stage: "encode", .. }), "{text}");
        assert!(text.contains("Cpu ran out of memory in the encode stage (64 views of 384x384)"), "{text}");
        assert!(!text.contains("frame #") && !text.contains('\n'), "one line, no stack: {text}");
        let cuda =
            tch::TchError::Torch("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)".into());
        let e = out_of_memory("prefill", "40000 tokens".into(), Device::Cuda(0))(QaError::Torch(cuda));
        assert!(e.to_string().starts_with("Cuda(0) ran out of memory in the prefill stage (40000 tokens): CUDA out"));
        // Anything else passes unchanged.
        let other = out_of_memory("generate", "1 token".into(), Device::Cpu)(QaError::Prompt("no placeholder".into()));
        assert!(matches!(other, QaError::Prompt(_)));
    }
}
