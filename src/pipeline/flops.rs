//! Theoretical decoder cost of a prefill, as token-compression papers report it (EVAL.md §7.2), in
//! multiply-accumulates (MACs).
//!
//! ```text
//! FastV (Eq. 5):   C(n) = 4·n·d² + 2·n²·d + 2·n·d·m                     per layer
//! corrected:       C(n) = n·d·(2d + 2·n_kv·h_d) + 2·n²·d + 3·n·d·m      (GQA projections, SwiGLU's three matrices)
//! total = Σ_layers C(n_ℓ)                                               (n_ℓ: tokens the layer sees)
//! ```
//!
//! The vision encoder, projector, selector and decoding steps are excluded.

use serde::Deserialize;

/// The decoder shape the formulas need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderShape {
    /// Hidden size `d`.
    pub hidden: usize,
    /// FFN size `m`.
    pub ffn: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
}

/// The `text_config` keys (transformers' names) the decoder shape is read from.
#[derive(serde::Deserialize)]
struct TextConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
}

impl DecoderShape {
    /// Reads a parsed `config.json` (its `text_config`, or the top level for a language model alone); the error
    /// names the missing key.
    pub fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let text = config.get("text_config").unwrap_or(config);
        let c = TextConfig::deserialize(text).map_err(|e| format!("text_config: {e}"))?;
        Ok(DecoderShape {
            hidden: c.hidden_size,
            ffn: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        })
    }
}

/// FastV's per-layer MACs for `n` tokens.
pub fn fastv_layer(s: &DecoderShape, n: usize) -> f64 {
    let (n, d, m) = (n as f64, s.hidden as f64, s.ffn as f64);
    4.0 * n * d * d + 2.0 * n * n * d + 2.0 * n * d * m
}

/// The SwiGLU- and GQA-correct per-layer MACs for `n` tokens.
pub fn swiglu_layer(s: &DecoderShape, n: usize) -> f64 {
    let (n, d, m) = (n as f64, s.hidden as f64, s.ffn as f64);
    let kv = (s.kv_heads * (s.hidden / s.heads)) as f64;
    n * d * (2.0 * d + 2.0 * kv) + 2.0 * n * n * d + 3.0 * n * d * m
}

/// Total MACs when layer `ℓ` sees `tokens[ℓ]` tokens, with both formulas: `(fastv, swiglu)`.
pub fn prefill_macs(s: &DecoderShape, tokens_per_layer: &[usize]) -> (f64, f64) {
    tokens_per_layer.iter().fold((0.0, 0.0), |(a, b), &n| (a + fastv_layer(s, n), b + swiglu_layer(s, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_published_table() {
        let llava = DecoderShape { hidden: 4096, ffn: 11008, layers: 32, heads: 32, kv_heads: 32 };
        let (fastv, swiglu) = prefill_macs(&llava, &[576; 32]);
        assert!((fastv / 1e12 - 2.986).abs() < 1e-3, "{fastv}");
        assert!((swiglu / 1e12 - 3.817).abs() < 1e-3, "{swiglu}");
        let (f64t, _) = prefill_macs(&llava, &[64; 32]);
        assert!((f64t / 1e12 - 0.323).abs() < 1e-3);
        // FastV K = 2, R = 50 %: -47.6 %.
        let mut layers = vec![576; 2];
        layers.extend([288; 30]);
        let reduction = 1.0 - prefill_macs(&llava, &layers).0 / fastv;
        assert!((reduction - 0.476).abs() < 1e-3, "{reduction}");
        let smol = DecoderShape { hidden: 576, ffn: 1536, layers: 30, heads: 9, kv_heads: 3 };
        assert!((prefill_macs(&smol, &[64; 30]).1 / 1e9 - 6.94).abs() < 0.01);
        assert!((prefill_macs(&smol, &[1024; 30]).1 / 1e9 - 145.0).abs() < 0.1);
    }
}
