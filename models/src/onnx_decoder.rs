//! The `onnx` backend's language model: `embed_tokens.onnx` (ids -> embeddings) and the merged decoder
//! `decoder_model_merged.onnx` of the community (Transformers.js) layout, run with ONNX Runtime. One graph serves the
//! prefill and every decoding step: it takes `inputs_embeds`, `attention_mask`, `position_ids` and
//! `past_key_values.N.key/value` (empty at the start) and returns `logits` and `present.N.key/value`, which become the
//! next step's past. Visual tokens are written into the embeddings at the placeholder positions before the prefill,
//! so pre-LLM pruning works unchanged; in-decoder pruning needs attention rows inside the graph and is not offered.
//!
//! Qwen-VL exports take M-RoPE's `position_ids` `[3, 1, S]` (told apart by the input's rank) and Qwen3-VL's take
//! `deepstack_rows` `[R]` with `deepstack_embeds` `[levels, R, D]`, the DeepStack planes added to those rows after
//! the first decoder layers; decoding steps feed no rows (`R = 0`) and all three position rows equal.
//!
//! Cost per step: one graph run over the new tokens against the cached keys, as the torch backend.

use crate::onnx_session::{
    build_session, float_input, take, take_last_row, takes_f16, Array, OnnxError, OnnxOptions, Precision,
};
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorRef, ValueType};

use crate::positions::PositionIds;
use std::path::{Path, PathBuf};

/// The keys and values of every layer so far (`[1, kv_heads, T, head_dim]` each, keys then values per layer), kept
/// as the tensors ONNX Runtime returned: the next step feeds them back as views, so the cache is never copied
/// between steps.
#[derive(Debug, Default)]
pub struct OnnxKvCache {
    past: Vec<DynValue>,
    len: usize,
    /// Position id of the next token (past the last given id when positions have gaps).
    next_position: i64,
}

impl OnnxKvCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held (element size of the graph's cache: 4 for fp32 exports, 2 for fp16).
    pub fn bytes(&self) -> usize {
        self.past
            .iter()
            .map(|v| match v.dtype() {
                ValueType::Tensor { ty, shape, .. } => {
                    ty.byte_size(shape.iter().map(|&d| d.max(0) as usize).product()).unwrap_or(0)
                }
                _ => 0,
            })
            .sum()
    }
}

/// A loaded ONNX language model (embedding table and merged decoder).
pub struct OnnxDecoder {
    embed: Session,
    decoder: Session,
    folder: PathBuf,
    precision: Precision,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
    /// Whether `position_ids` is `[3, B, S]` (M-RoPE).
    mrope: bool,
    /// DeepStack levels the graph adds (0 without `deepstack_embeds`).
    levels: usize,
}

/// Qwen3-VL's DeepStack input for one prefill: the prompt rows that get the planes and `[levels, rows, D]` planes.
#[derive(Debug, Clone, Copy)]
pub struct DeepStackInput<'a> {
    /// Prompt rows, ascending.
    pub rows: &'a [i64],
    /// `[levels, rows, D]` row-major.
    pub planes: &'a [f32],
}

impl OnnxDecoder {
    /// Loads `embed_tokens.onnx` and `decoder_model_merged.onnx` (in `precision`: `_fp16`, `_quantized`, ...
    /// suffixes) from an export's `onnx/` folder; the cache geometry (layers, KV heads, head size) comes from the
    /// `config.json` next to that folder.
    pub fn load(onnx_dir: &Path, precision: Precision, options: &OnnxOptions) -> Result<Self, OnnxError> {
        let config_path = onnx_dir.parent().unwrap_or(onnx_dir).join("config.json");
        let bad = |reason: String| OnnxError::Ort { path: config_path.clone(), reason };
        let text = std::fs::read_to_string(&config_path).map_err(|e| bad(e.to_string()))?;
        let full: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let c = full.get("text_config").unwrap_or(&full);
        let int = |k: &str| c[k].as_u64().map(|v| v as usize).ok_or_else(|| bad(format!("`{k}` is missing")));
        let (hidden, heads) = (int("hidden_size")?, int("num_attention_heads")?);
        let kv_heads = c["num_key_value_heads"].as_u64().map_or(heads, |v| v as usize);
        let head_dim = c["head_dim"].as_u64().map_or(hidden / heads.max(1), |v| v as usize);
        let decoder = build_session(&onnx_dir.join(precision.file("decoder_model_merged")), options)?;
        let dims = |name: &str| {
            decoder.inputs().iter().find(|i| i.name() == name).and_then(|i| match i.dtype() {
                ValueType::Tensor { shape, .. } => Some(shape.iter().copied().collect::<Vec<i64>>()),
                _ => None,
            })
        };
        let mrope = dims("position_ids").is_some_and(|d| d.len() == 3);
        let levels = dims("deepstack_embeds").and_then(|d| d.first().copied()).map_or(0, |l| l.max(0) as usize);
        Ok(OnnxDecoder {
            embed: build_session(&onnx_dir.join(precision.file("embed_tokens")), options)?,
            decoder,
            folder: onnx_dir.to_path_buf(),
            precision,
            layers: int("num_hidden_layers")?,
            kv_heads,
            head_dim,
            hidden,
            mrope,
            levels,
        })
    }

    fn fail(&self, file: &str, e: &dyn std::fmt::Display) -> OnnxError {
        OnnxError::Ort { path: self.folder.join(file), reason: e.to_string() }
    }

    /// Embeddings `[1, S, D]` of `ids`.
    pub fn embed(&mut self, ids: &[i64]) -> Result<Array, OnnxError> {
        let file = &self.precision.file("embed_tokens");
        let view = TensorRef::from_array_view(([1i64, ids.len() as i64], ids)).map_err(|e| self.fail(file, &e))?;
        let path = self.folder.join(file);
        let outputs = self
            .embed
            .run(ort::inputs!["input_ids" => view])
            .map_err(|e| OnnxError::Ort { path: path.clone(), reason: e.to_string() })?;
        take(&outputs, "inputs_embeds", &path)?.ok_or_else(|| OnnxError::Output {
            path,
            output: "inputs_embeds".into(),
            reason: "missing".into(),
        })
    }

    /// Runs embeddings `[1, S, D]` after the cached positions; returns the last position's logits and extends the
    /// cache.
    pub fn forward(&mut self, embeds: &Array, cache: &mut OnnxKvCache) -> Result<Vec<f32>, OnnxError> {
        self.forward_at(embeds, None, cache)
    }

    /// Whether the graph takes M-RoPE position ids (`[3, 1, S]`).
    pub fn mrope(&self) -> bool {
        self.mrope
    }

    /// DeepStack levels the graph adds after its first layers (0 for graphs without them).
    pub fn deepstack_levels(&self) -> usize {
        self.levels
    }

    /// As [`OnnxDecoder::forward`] with explicit position ids (1-D: one per row, ascending from the next position,
    /// gaps allowed; M-RoPE: three rows, for a graph that takes them), for prompts whose pruned visual tokens keep
    /// their original positions. The attention mask covers the tokens actually cached; later steps continue from
    /// the largest id + 1.
    pub fn forward_at(
        &mut self,
        embeds: &Array,
        positions: Option<&PositionIds>,
        cache: &mut OnnxKvCache,
    ) -> Result<Vec<f32>, OnnxError> {
        self.forward_stacked(embeds, positions, None, cache)
    }

    /// As [`OnnxDecoder::forward_at`], adding Qwen3-VL's DeepStack planes to `deepstack.rows` after the first
    /// layers (a graph with `deepstack_embeds` gets no rows when `deepstack` is `None`).
    pub fn forward_stacked(
        &mut self,
        embeds: &Array,
        positions: Option<&PositionIds>,
        deepstack: Option<DeepStackInput<'_>>,
        cache: &mut OnnxKvCache,
    ) -> Result<Vec<f32>, OnnxError> {
        let file = &self.precision.file("decoder_model_merged");
        let path = self.folder.join(file);
        let s = embeds.shape.get(1).copied().unwrap_or(0);
        if embeds.shape.len() != 3 || embeds.shape[0] != 1 || s == 0 {
            return Err(self.fail(file, &format!("inputs_embeds of shape {:?}, expected [1, S, D]", embeds.shape)));
        }
        if cache.past.is_empty() {
            for i in 0..2 * self.layers {
                let name = cache_name("past_key_values", i);
                let shape = [1i64, self.kv_heads as i64, 0, self.head_dim as i64];
                let empty: DynValue = if takes_f16(&self.decoder, &name) {
                    Tensor::from_array((shape, Vec::<half::f16>::new())).map_err(|e| self.fail(file, &e))?.into_dyn()
                } else {
                    Tensor::from_array((shape, Vec::<f32>::new())).map_err(|e| self.fail(file, &e))?.into_dyn()
                };
                cache.past.push(empty);
            }
        }
        let total = cache.len + s;
        let first = cache.next_position;
        let next: Vec<i64> = (first..first + s as i64).collect();
        let (rows, next_position): (Vec<i64>, i64) = match positions {
            Some(PositionIds::Sequence(p)) => {
                if p.len() != s || p.windows(2).any(|w| w[0] >= w[1]) || p.first().is_some_and(|&v| v < first) {
                    let why = format!("{} position ids for {s} inputs: they must ascend from {first}", p.len());
                    return Err(self.fail(file, &why));
                }
                let after = p.last().map_or(first, |&v| v + 1);
                (if self.mrope { p.repeat(3) } else { p.clone() }, after)
            }
            Some(PositionIds::MRope(rows)) => {
                if !self.mrope {
                    return Err(self.fail(file, &"M-RoPE position ids for a graph that takes 1-D ones"));
                }
                if rows.iter().any(|r| r.len() != s) {
                    let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
                    return Err(self.fail(file, &format!("M-RoPE rows of {lens:?} ids for {s} inputs")));
                }
                let after = rows.iter().flatten().max().map_or(first, |&m| m + 1);
                (rows.concat(), after)
            }
            None => (if self.mrope { next.repeat(3) } else { next }, first + s as i64),
        };
        let position_shape = if self.mrope { vec![3i64, 1, s as i64] } else { vec![1i64, s as i64] };
        let mask = vec![1i64; total];
        let mut inputs: Vec<(std::borrow::Cow<str>, ort::session::SessionInputValue)> = vec![
            ("inputs_embeds".into(), float_input(&self.decoder, "inputs_embeds", &embeds.shape, &embeds.data, &path)?),
            (
                "attention_mask".into(),
                Tensor::from_array(([1i64, total as i64], mask)).map_err(|e| self.fail(file, &e))?.into(),
            ),
            (
                "position_ids".into(),
                Tensor::from_array((position_shape, rows)).map_err(|e| self.fail(file, &e))?.into(),
            ),
        ];
        if self.levels > 0 {
            let (rows, planes) = deepstack.map_or((&[][..], &[][..]), |d| (d.rows, d.planes));
            let d = self.hidden;
            if planes.len() != self.levels * rows.len() * d || rows.iter().any(|&r| r < 0 || r as usize >= s) {
                let why = format!(
                    "DeepStack planes of {} values for {} rows of {s} ({} levels of width {d})",
                    planes.len(),
                    rows.len(),
                    self.levels
                );
                return Err(self.fail(file, &why));
            }
            let shape = [self.levels as i64, rows.len() as i64, d as i64];
            inputs.push((
                "deepstack_rows".into(),
                TensorRef::from_array_view(([rows.len() as i64], rows)).map_err(|e| self.fail(file, &e))?.into(),
            ));
            inputs.push((
                "deepstack_embeds".into(),
                float_input(&self.decoder, "deepstack_embeds", &shape.map(|v| v as usize), planes, &path)?,
            ));
        } else if deepstack.is_some() {
            return Err(self.fail(file, &"DeepStack planes for a graph without a `deepstack_embeds` input"));
        }
        for (i, past) in cache.past.iter().enumerate() {
            inputs.push((cache_name("past_key_values", i).into(), past.into()));
        }
        let mut outputs =
            self.decoder.run(inputs).map_err(|e| OnnxError::Ort { path: path.clone(), reason: e.to_string() })?;
        let logits = take_last_row(&outputs, "logits", &path)?.ok_or_else(|| OnnxError::Output {
            path: path.clone(),
            output: "logits".into(),
            reason: "missing".into(),
        })?;
        let mut presents = Vec::with_capacity(2 * self.layers);
        for i in 0..2 * self.layers {
            let name = cache_name("present", i);
            presents.push(outputs.remove(&name).ok_or_else(|| OnnxError::Output {
                path: path.clone(),
                output: name.clone(),
                reason: "missing".into(),
            })?);
        }
        cache.past = presents;
        cache.len = total;
        cache.next_position = next_position;
        Ok(logits)
    }
}

/// The graph input (`past_key_values`) or output (`present`) holding layer `i / 2`'s keys (even `i`) or values
/// (odd `i`).
fn cache_name(prefix: &str, i: usize) -> String {
    format!("{prefix}.{}.{}", i / 2, if i.is_multiple_of(2) { "key" } else { "value" })
}
