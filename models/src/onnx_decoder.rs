//! The `onnx` backend's language model: `embed_tokens.onnx` (ids -> embeddings) and the merged decoder
//! `decoder_model_merged.onnx` of the community (Transformers.js) layout, run with ONNX Runtime. One graph serves the
//! prefill and every decoding step: it takes `inputs_embeds`, `attention_mask`, `position_ids` and
//! `past_key_values.N.key/value` (empty at the start) and returns `logits` and `present.N.key/value`, which become the
//! next step's past. Visual tokens are written into the embeddings at the placeholder positions before the prefill,
//! so pre-LLM pruning works unchanged; in-decoder pruning needs attention rows inside the graph and is not offered.
//!
//! Cost per step: one graph run over the new tokens against the cached keys, as the torch backend.

use crate::onnx_session::{
    build_session, float_input, take, take_last_row, takes_f16, Array, OnnxError, OnnxOptions, Precision,
};
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorRef, ValueType};

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
        Ok(OnnxDecoder {
            embed: build_session(&onnx_dir.join(precision.file("embed_tokens")), options)?,
            decoder: build_session(&onnx_dir.join(precision.file("decoder_model_merged")), options)?,
            folder: onnx_dir.to_path_buf(),
            precision,
            layers: int("num_hidden_layers")?,
            kv_heads,
            head_dim,
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

    /// As [`OnnxDecoder::forward`] with explicit position ids (one per row, ascending from the next position; gaps
    /// allowed), for prompts whose pruned visual tokens keep their original positions. The attention mask covers
    /// the tokens actually cached; later steps continue from the last id + 1.
    pub fn forward_at(
        &mut self,
        embeds: &Array,
        positions: Option<&[i64]>,
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
        let positions: Vec<i64> = match positions {
            Some(p) => {
                if p.len() != s || p.windows(2).any(|w| w[0] >= w[1]) || p.first().is_some_and(|&v| v < first) {
                    let why = format!("{} position ids for {s} inputs: they must ascend from {first}", p.len());
                    return Err(self.fail(file, &why));
                }
                p.to_vec()
            }
            None => (first..first + s as i64).collect(),
        };
        let next_position = positions.last().map_or(first, |&p| p + 1);
        let mask = vec![1i64; total];
        let mut inputs: Vec<(std::borrow::Cow<str>, ort::session::SessionInputValue)> = vec![
            ("inputs_embeds".into(), float_input(&self.decoder, "inputs_embeds", &embeds.shape, &embeds.data, &path)?),
            (
                "attention_mask".into(),
                Tensor::from_array(([1i64, total as i64], mask)).map_err(|e| self.fail(file, &e))?.into(),
            ),
            (
                "position_ids".into(),
                Tensor::from_array(([1i64, s as i64], positions)).map_err(|e| self.fail(file, &e))?.into(),
            ),
        ];
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
