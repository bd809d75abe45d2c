//! Text tokenizers: a `tokenizer.json` from a Hugging Face checkpoint, or the GPT-2-style BPE stored inside a GGUF
//! file (`tokenizer.ggml.model = gpt2`: tokens, merges, token types), rebuilt with the `tokenizers` crate as
//! llama.cpp and transformers read it: byte-level BPE, a `Digits(individual)` then `ByteLevel` pre-tokenizer (the
//! SmolLM2 / GPT-2 family), control tokens matched whole.

use crate::gguf::{Gguf, GgufError, Value};
use std::path::Path;
use thiserror::Error;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// Why a tokenizer could not be built or used.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// From the GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// From the tokenizers crate.
    #[error("tokenizer ({context}): {message}")]
    Tokenizers {
        /// What was being done.
        context: String,
        /// The library's message.
        message: String,
    },
}

fn tk_err(context: &str) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> TokenizerError + '_ {
    move |e| TokenizerError::Tokenizers { context: context.to_string(), message: e.to_string() }
}

/// A tokenizer with the ids generation needs.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Beginning-of-sequence id, if any.
    pub bos: Option<u32>,
    /// End-of-sequence ids (generation stops at any).
    pub eos: Vec<u32>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let inner = Tokenizer::from_file(path).map_err(tk_err(&path.display().to_string()))?;
        Ok(TextTokenizer { inner, bos: None, eos: Vec::new() })
    }

    /// Loads a Hugging Face model directory's `tokenizer.json` with its special ids: end-of-sequence from
    /// `generation_config.json` (`eos_token_id`, one id or a list, as `generate()` reads it), then `config.json`
    /// (its `text_config` for VLMs), plus the `eos_token` of `tokenizer_config.json`; `bos_token` likewise.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let mut t = Self::from_file(&dir.join("tokenizer.json"))?;
        let read = |name: &str| -> serde_json::Value {
            std::fs::read_to_string(dir.join(name)).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default()
        };
        let (generation, config, tokenizer_config) =
            (read("generation_config.json"), read("config.json"), read("tokenizer_config.json"));
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            match v {
                serde_json::Value::Number(n) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
                serde_json::Value::Array(a) => a.iter().filter_map(|n| n.as_u64().map(|n| n as u32)).collect(),
                _ => Vec::new(),
            }
        };
        let special = |key: &str| -> Option<u32> {
            let v = &tokenizer_config[key];
            let text = v.as_str().or_else(|| v["content"].as_str())?;
            t.inner.token_to_id(text)
        };
        let mut eos = ids(&generation["eos_token_id"]);
        if eos.is_empty() {
            eos = ids(&config["eos_token_id"]);
        }
        if eos.is_empty() {
            eos = ids(&config["text_config"]["eos_token_id"]);
        }
        if let Some(e) = special("eos_token") {
            if !eos.contains(&e) {
                eos.push(e);
            }
        }
        let bos = ids(&generation["bos_token_id"]).first().copied().or_else(|| special("bos_token"));
        t.eos = eos;
        t.bos = bos;
        Ok(t)
    }

    /// Rebuilds the BPE tokenizer stored in a GGUF file.
    pub fn from_gguf(g: &Gguf) -> Result<Self, TokenizerError> {
        let model = g.meta("tokenizer.ggml.model")?.as_str().unwrap_or_default().to_string();
        if model != "gpt2" {
            return Err(TokenizerError::Tokenizers {
                context: "GGUF".into(),
                message: format!("tokenizer.ggml.model = {model}; only gpt2-style BPE is supported"),
            });
        }
        let strings = |key: &str| -> Result<Vec<String>, TokenizerError> {
            Ok(g.meta(key)?
                .as_array()
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect())
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect();
        let types: Vec<i64> = g
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_int).collect())
            .unwrap_or_default();
        let vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect::<tokenizers::models::bpe::Vocab>();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tk_err("GGUF BPE"))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control tokens (type 3) are matched whole, never split by the BPE.
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter())
            .filter(|(_, &t)| t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(special).map_err(tk_err("control tokens"))?;
        let id = |k: &str| g.metadata.get(k).and_then(Value::as_int).map(|v| v as u32);
        let eos = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        Ok(TextTokenizer { inner, bos: id("tokenizer.ggml.bos_token_id"), eos })
    }

    /// Token ids of `text` (special tokens in the text are recognised; no BOS is added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(self.inner.encode(text, false).map_err(tk_err("encode"))?.get_ids().to_vec())
    }

    /// Token ids of `text` with the tokenizer's own special tokens added by its post-processor (CLIP's
    /// `<|startoftext|>` ... `<|endoftext|>`, SigLIP's `</s>`): what `tokenizer(text)["input_ids"]` gives in
    /// transformers (truncated or padded only if `tokenizer.json` says so; see [`TextTokenizer::unbounded`]).
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(self.inner.encode(text, true).map_err(tk_err("encode"))?.get_ids().to_vec())
    }

    /// The same tokenizer without the truncation and padding `tokenizer.json` may carry, for callers that cut and
    /// pad sequences themselves (the dual encoders' chunking).
    pub fn unbounded(mut self) -> Result<Self, TokenizerError> {
        self.inner.with_truncation(None).map_err(tk_err("truncation"))?;
        self.inner.with_padding(None);
        Ok(self)
    }

    /// The id of token `text`, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, true).map_err(tk_err("decode"))
    }

    /// The text of one token, special tokens included.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}
