//! A Llama-architecture causal LM on libtorch (RMSNorm, rotary embeddings, grouped-query attention through fused
//! scaled-dot-product attention, SwiGLU MLP), loaded from GGUF, with a KV cache and greedy or seeded top-p
//! generation.
//!
//! GGUF stores Llama's query and key projections permuted for llama.cpp's rotary layout, in which each head rotates
//! adjacent pairs `(x[2i], x[2i+1])` by `pos·θ_i`, `θ_i = base^(−2i/d)`; the weights are used as stored and the
//! rotation follows that layout, which equals transformers' `rotate_half` on the unpermuted weights. Weights are
//! dequantised to f32 at load (compute dtype f32 on the CPU).

use crate::gguf::{Gguf, GgufError};
use std::path::Path;
use tch::{Device, Kind, Tensor};
use thiserror::Error;

/// Why the model could not load or run.
#[derive(Debug, Error)]
pub enum LlamaError {
    /// From the GGUF reader.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// From libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The file holds another architecture.
    #[error("{path}: architecture `{found}` is not llama")]
    Architecture {
        /// The file.
        path: String,
        /// What it holds.
        found: String,
    },
}

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaConfig {
    /// Decoder layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Rotary base.
    pub rope_base: f64,
}

struct Layer {
    attn_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Per-layer cached keys and values `[B, kv_heads, T, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    entries: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> i64 {
        self.entries.first().map_or(0, |(k, _)| k.size()[2])
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(k, v)| (k.numel() + v.numel()) * k.kind().elt_size_in_bytes()).sum()
    }
}

/// The loaded model.
pub struct Llama {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    device: Device,
}

fn load(g: &Gguf, name: &str, device: Device) -> Result<Tensor, LlamaError> {
    let (data, shape) = g.tensor_f32(name)?;
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_slice(&data).f_reshape(shape.as_slice())?.f_to_device(device)?)
}

impl Llama {
    /// Loads a llama-architecture GGUF file onto `device`.
    pub fn from_gguf(path: &Path, device: Device) -> Result<Self, LlamaError> {
        let g = Gguf::open(path)?;
        let arch = g.meta("general.architecture")?.as_str().unwrap_or_default().to_string();
        if arch != "llama" {
            return Err(LlamaError::Architecture { path: path.display().to_string(), found: arch });
        }
        let config = LlamaConfig {
            layers: g.meta_int("llama.block_count")? as usize,
            hidden: g.meta_int("llama.embedding_length")? as usize,
            heads: g.meta_int("llama.attention.head_count")? as usize,
            kv_heads: g.meta_int("llama.attention.head_count_kv")? as usize,
            eps: g.meta_float("llama.attention.layer_norm_rms_epsilon")?,
            rope_base: g.meta_float("llama.rope.freq_base").unwrap_or(10000.0),
        };
        let _guard = tch::no_grad_guard();
        let embed = load(&g, "token_embd.weight", device)?;
        let lm_head = if g.tensors.contains_key("output.weight") {
            load(&g, "output.weight", device)?
        } else {
            embed.shallow_clone()
        };
        let layers = (0..config.layers)
            .map(|i| {
                let w = |n: &str| load(&g, &format!("blk.{i}.{n}.weight"), device);
                Ok(Layer {
                    attn_norm: w("attn_norm")?,
                    q: w("attn_q")?,
                    k: w("attn_k")?,
                    v: w("attn_v")?,
                    o: w("attn_output")?,
                    ffn_norm: w("ffn_norm")?,
                    gate: w("ffn_gate")?,
                    up: w("ffn_up")?,
                    down: w("ffn_down")?,
                })
            })
            .collect::<Result<Vec<_>, LlamaError>>()?;
        Ok(Llama { config, embed, layers, norm: load(&g, "output_norm.weight", device)?, lm_head, device })
    }

    /// Rotates `x` `[B, H, S, D]` for positions `start..start + S` (adjacent-pair layout).
    fn rope(&self, x: &Tensor, start: i64) -> Result<Tensor, LlamaError> {
        let (b, h, s, d) = x.size4()?;
        let half = d / 2;
        let inv: Tensor = Tensor::arange(half, (Kind::Float, self.device))
            .f_mul_scalar(-2.0 / d as f64)?
            .f_mul_scalar(self.config.rope_base.ln())?
            .f_exp()?;
        let pos = Tensor::arange_start(start, start + s, (Kind::Float, self.device));
        let angles = pos.f_unsqueeze(1)?.f_mul(&inv.f_unsqueeze(0)?)?; // [S, D/2]
        let (cos, sin) = (angles.f_cos()?, angles.f_sin()?);
        let pairs = x.f_reshape([b, h, s, half, 2])?;
        let (x0, x1) = (pairs.f_select(4, 0)?, pairs.f_select(4, 1)?);
        let r0 = x0.f_mul(&cos)?.f_sub(&x1.f_mul(&sin)?)?;
        let r1 = x0.f_mul(&sin)?.f_add(&x1.f_mul(&cos)?)?;
        Ok(Tensor::f_stack(&[r0, r1], 4)?.f_reshape([b, h, s, d])?)
    }

    /// Runs `ids` `[B, S]` after the cached positions; returns the logits of the last position `[B, V]`.
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlamaError> {
        let _guard = tch::no_grad_guard();
        let c = self.config;
        let head_dim = (c.hidden / c.heads) as i64;
        let start = cache.len();
        let (b, s) = ids.size2()?;
        let mut x = self.embed.f_index_select(0, &ids.f_reshape([-1])?)?.f_reshape([b, s, c.hidden as i64])?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = x.f_rms_norm([c.hidden as i64].as_slice(), Some(&l.attn_norm), c.eps)?;
            let split = |w: &Tensor, heads: usize| -> Result<Tensor, LlamaError> {
                Ok(h.f_linear::<&Tensor>(w, None)?.f_reshape([b, s, heads as i64, head_dim])?.f_transpose(1, 2)?)
            };
            let q = self.rope(&split(&l.q, c.heads)?, start)?;
            let k = self.rope(&split(&l.k, c.kv_heads)?, start)?;
            let v = split(&l.v, c.kv_heads)?;
            let (k, v) = match cache.entries.get(i) {
                Some((pk, pv)) => (Tensor::f_cat(&[pk, &k], 2)?, Tensor::f_cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            let attn = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, s > 1, None, true)?;
            if i < cache.entries.len() {
                cache.entries[i] = (k, v);
            } else {
                cache.entries.push((k, v));
            }
            let attn = attn.f_transpose(1, 2)?.f_reshape([b, s, c.hidden as i64])?;
            x = x.f_add(&attn.f_linear::<&Tensor>(&l.o, None)?)?;
            let h = x.f_rms_norm([c.hidden as i64].as_slice(), Some(&l.ffn_norm), c.eps)?;
            let gated = h.f_linear::<&Tensor>(&l.gate, None)?.f_silu()?.f_mul(&h.f_linear::<&Tensor>(&l.up, None)?)?;
            x = x.f_add(&gated.f_linear::<&Tensor>(&l.down, None)?)?;
        }
        let last = x.f_select(1, s - 1)?.f_rms_norm([c.hidden as i64].as_slice(), Some(&self.norm), c.eps)?;
        Ok(last.f_linear::<&Tensor>(&self.lm_head, None)?)
    }

    /// Greedy decoding of up to `max_new` tokens after `prompt`, stopping at any of `stop`.
    pub fn generate_greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>, LlamaError> {
        let mut out = Vec::new();
        self.generate(prompt, max_new, stop, |t| {
            out.push(t);
            true
        })?;
        Ok(out)
    }

    /// Greedy decoding that hands each new token to `on_token` as soon as it exists (return `false` to stop);
    /// returns the KV cache so callers can report its size.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<KvCache, LlamaError> {
        let mut cache = KvCache::default();
        let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let mut logits =
            self.forward(&Tensor::from_slice(&ids).f_unsqueeze(0)?.f_to_device(self.device)?, &mut cache)?;
        for _ in 0..max_new {
            let next = logits.f_argmax(-1, false)?.f_int64_value(&[0])? as u32;
            if stop.contains(&next) || !on_token(next) {
                break;
            }
            let step = Tensor::from_slice(&[next as i64]).f_unsqueeze(0)?.f_to_device(self.device)?;
            logits = self.forward(&step, &mut cache)?;
        }
        Ok(cache)
    }
}
