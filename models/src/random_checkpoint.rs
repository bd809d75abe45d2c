//! Random-weight checkpoints in the exact Hugging Face layout, for demos and benchmarks where no pretrained
//! vision-language weights can be downloaded: a `llava_onevision` directory (SigLIP tower, mlp2x_gelu projector,
//! image_newline, Qwen2 LM), a `qwen2_5_vl` one (windowed ViT + merger, M-RoPE Qwen2 LM) or a `qwen2` LM alone, with config.json, model.safetensors, a word-level tokenizer, a
//! Qwen-style chat template, the OneVision image processor config and generation_config.json.
//!
//! Weights follow transformers' initialisation: linear and embedding weights ~ N(0, 0.02²), norms 1, biases 0, drawn
//! from a seeded generator, so a checkpoint is the same on every machine. Token counts, FLOPs and timings measured on
//! these models are real; their answers are meaningless.
//!
//! Presets: [`OneVisionShape::demo`] (the real SigLIP geometry, 384 px / patch 14 -> 27x27 patches pooled to 14x14
//! per video frame, with narrow layers: about 12 M parameters) and [`OneVisionShape::onevision_0_5b`] (SigLIP-so400m +
//! Qwen2-0.5B shapes, about 0.9 B parameters, stored as bf16).

use crate::safetensors::{write, SafetensorsError, StoreAs};
use serde_json::json;
use std::path::Path;
use tokensieve_pruners::primitives::SplitMix64;

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RandomCheckpointError {
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Writing the weights failed.
    #[error(transparent)]
    Weights(#[from] SafetensorsError),
    /// Building the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// A SigLIP vision tower's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisionShape {
    /// Width.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub mlp: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch: usize,
}

/// A Qwen2 language model's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextShape {
    /// Width.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA).
    pub kv_heads: usize,
    /// SwiGLU width.
    pub mlp: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

impl TextShape {
    /// Qwen2-0.5B.
    pub fn qwen2_0_5b() -> Self {
        TextShape { hidden: 896, layers: 24, heads: 14, kv_heads: 2, mlp: 4864, vocab: 151936 }
    }
}

/// A LLaVA-OneVision model's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneVisionShape {
    /// The vision tower.
    pub vision: VisionShape,
    /// The language model.
    pub text: TextShape,
}

impl OneVisionShape {
    /// Small and fast, with the real input geometry (384 px, patch 14).
    pub fn demo() -> Self {
        OneVisionShape {
            vision: VisionShape { hidden: 192, layers: 4, heads: 3, mlp: 768, image_size: 384, patch: 14 },
            text: TextShape { hidden: 384, layers: 6, heads: 6, kv_heads: 2, mlp: 1024, vocab: 1024 },
        }
    }

    /// SigLIP-so400m + Qwen2-0.5B, the shapes of `llava-onevision-qwen2-0.5b`.
    pub fn onevision_0_5b() -> Self {
        OneVisionShape {
            vision: VisionShape { hidden: 1152, layers: 27, heads: 16, mlp: 4304, image_size: 384, patch: 14 },
            text: TextShape::qwen2_0_5b(),
        }
    }
}

/// A Qwen2.5-VL vision tower's shape (patch 14, 2 frames per temporal patch, 2 x 2 merger, 112-pixel windows).
#[derive(Debug, Clone, PartialEq)]
pub struct QwenVisionShape {
    /// Blocks.
    pub depth: usize,
    /// Width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// SwiGLU width.
    pub mlp: usize,
    /// Blocks with full attention (the rest attend within windows).
    pub full_attention: Vec<usize>,
}

/// A Qwen2.5-VL model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenVlShape {
    /// The vision tower.
    pub vision: QwenVisionShape,
    /// The language model (its head width must be 128 for the real `mrope_section` [16, 24, 24]).
    pub text: TextShape,
}

impl QwenVlShape {
    /// Small and fast, with the real geometry (patch 14, windows, merger, head width 128).
    pub fn demo() -> Self {
        QwenVlShape {
            vision: QwenVisionShape { depth: 4, hidden: 128, heads: 2, mlp: 256, full_attention: vec![1, 3] },
            text: TextShape { hidden: 512, layers: 6, heads: 4, kv_heads: 2, mlp: 1024, vocab: 1024 },
        }
    }

    /// The shapes of `Qwen2.5-VL-3B-Instruct` (vision 32 blocks x 1280, Qwen2.5-3B decoder), about 3.8 B parameters.
    pub fn qwen2_5_vl_3b() -> Self {
        QwenVlShape {
            vision: QwenVisionShape {
                depth: 32,
                hidden: 1280,
                heads: 16,
                mlp: 3420,
                full_attention: vec![7, 15, 23, 31],
            },
            text: TextShape { hidden: 2048, layers: 36, heads: 16, kv_heads: 2, mlp: 11008, vocab: 151936 },
        }
    }
}

/// Box-Muller normals from SplitMix64: seeded, portable, fast enough for a billion draws.
struct Normal {
    rng: SplitMix64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Normal { rng: SplitMix64::new(seed), spare: None }
    }

    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.rng.unit().max(1e-300), self.rng.unit());
        let r = (-2.0 * u.ln()).sqrt();
        let t = std::f64::consts::TAU * v;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }

    fn fill(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.sample() * std) as f32).collect()
    }
}

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn linear(out: &mut Tensors, rng: &mut Normal, name: &str, rows: usize, cols: usize, bias: bool) {
    out.push((format!("{name}.weight"), vec![rows, cols], rng.fill(rows * cols, 0.02)));
    if bias {
        out.push((format!("{name}.bias"), vec![rows], vec![0.0; rows]));
    }
}

fn norm(out: &mut Tensors, name: &str, width: usize, bias: bool) {
    out.push((format!("{name}.weight"), vec![width], vec![1.0; width]));
    if bias {
        out.push((format!("{name}.bias"), vec![width], vec![0.0; width]));
    }
}

fn text_weights(out: &mut Tensors, rng: &mut Normal, t: &TextShape, model: &str, head: &str) {
    let kv = t.hidden / t.heads * t.kv_heads;
    out.push((format!("{model}embed_tokens.weight"), vec![t.vocab, t.hidden], rng.fill(t.vocab * t.hidden, 0.02)));
    for l in 0..t.layers {
        let p = format!("{model}layers.{l}");
        norm(out, &format!("{p}.input_layernorm"), t.hidden, false);
        linear(out, rng, &format!("{p}.self_attn.q_proj"), t.hidden, t.hidden, true);
        linear(out, rng, &format!("{p}.self_attn.k_proj"), kv, t.hidden, true);
        linear(out, rng, &format!("{p}.self_attn.v_proj"), kv, t.hidden, true);
        linear(out, rng, &format!("{p}.self_attn.o_proj"), t.hidden, t.hidden, false);
        norm(out, &format!("{p}.post_attention_layernorm"), t.hidden, false);
        linear(out, rng, &format!("{p}.mlp.gate_proj"), t.mlp, t.hidden, false);
        linear(out, rng, &format!("{p}.mlp.up_proj"), t.mlp, t.hidden, false);
        linear(out, rng, &format!("{p}.mlp.down_proj"), t.hidden, t.mlp, false);
    }
    norm(out, &format!("{model}norm"), t.hidden, false);
    out.push((head.to_string(), vec![t.vocab, t.hidden], rng.fill(t.vocab * t.hidden, 0.02)));
}

fn text_config(t: &TextShape) -> serde_json::Value {
    json!({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": t.hidden,
        "intermediate_size": t.mlp, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
        "num_key_value_heads": t.kv_heads, "vocab_size": t.vocab, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2})
}

fn write_text(dir: &Path, name: &str, text: &str) -> Result<(), RandomCheckpointError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| RandomCheckpointError::Io { path: path.display().to_string(), source })
}

/// The common-English word list of the demo tokenizer (the rest of the vocabulary is `w<N>` fillers).
const WORDS: &str = "a an the this that these those is are was were be been it its there here what which who how \
    why when where many much one two three four five six seven eight nine ten car cars bus truck person people \
    pedestrian bike bicycle road street lane left right front back ahead behind stop go slow fast turn straight \
    moving parked light red green yellow sign traffic ego vehicle video frame scene image camera see shows show \
    in on of to and or with without for at by from up down near far yes no not do does did can could should would \
    will man woman child dog cat ball table cup chair room door window tree sky water white black blue color \
    walking running sitting standing riding driving playing holding looking happens happening describe answer \
    question option best letter";

/// The word-level tokenizer, chat template and generation settings shared by every layout; returns the ids of
/// `<image>` and `<video>` (the last two of the vocabulary).
fn write_tokenizer(dir: &Path, vocab: usize) -> Result<(i64, i64), RandomCheckpointError> {
    let ids = write_tokenizer_with(dir, vocab, &["<image>", "<video>"])?;
    Ok((ids[0], ids[1]))
}

/// [`write_tokenizer`] with `tail` as the last special tokens of the vocabulary; returns their ids.
fn write_tokenizer_with(dir: &Path, vocab: usize, tail: &[&str]) -> Result<Vec<i64>, RandomCheckpointError> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    use tokenizers::{AddedToken, Tokenizer};
    let mut words: Vec<String> =
        ["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"].iter().map(|s| s.to_string()).collect();
    words.extend(WORDS.split_whitespace().map(str::to_string));
    let mut i = 0;
    while words.len() < vocab.saturating_sub(tail.len()) {
        words.push(format!("w{i}"));
        i += 1;
    }
    words.truncate(vocab.saturating_sub(tail.len()));
    words.extend(tail.iter().map(|t| t.to_string()));
    let map: std::collections::HashMap<String, u32> =
        words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
    let model = WordLevel::builder()
        .vocab(map.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .map_err(|e| RandomCheckpointError::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(WhitespaceSplit));
    let specials: Vec<AddedToken> = tail
        .iter()
        .chain(&["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
        .map(|s| AddedToken::from(*s, true))
        .collect();
    tok.add_special_tokens(specials).map_err(|e| RandomCheckpointError::Tokenizer(e.to_string()))?;
    let path = dir.join("tokenizer.json");
    tok.save(&path, false).map_err(|e| RandomCheckpointError::Tokenizer(format!("{}: {e}", path.display())))?;
    let template = "{% for message in messages %}<|im_start|> {{ message['role'] }} {{ message['content'] }} \
        <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}";
    let config = json!({"chat_template": template, "eos_token": "<|im_end|>", "bos_token": null,
        "pad_token": "<|endoftext|>", "model_max_length": 32768});
    write_text(dir, "tokenizer_config.json", &serde_json::to_string_pretty(&config).unwrap_or_default())?;
    write_text(dir, "generation_config.json", &json!({"eos_token_id": [2], "bos_token_id": 1}).to_string())?;
    Ok((0..tail.len()).map(|i| (vocab - tail.len() + i) as i64).collect())
}

/// Writes a random `llava_onevision` checkpoint of `shape` into `dir`.
pub fn write_onevision(
    dir: &Path,
    shape: &OneVisionShape,
    seed: u64,
    dtype: StoreAs,
) -> Result<(), RandomCheckpointError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| RandomCheckpointError::Io { path: dir.display().to_string(), source })?;
    let (v, t) = (shape.vision, shape.text);
    let (image_id, video_id) = write_tokenizer(dir, t.vocab)?;
    let mut rng = Normal::new(seed);
    let mut w: Tensors = Vec::new();
    let patches = (v.image_size / v.patch) * (v.image_size / v.patch);
    w.push(("image_newline".into(), vec![t.hidden], rng.fill(t.hidden, 1.0 / (t.hidden as f64).sqrt())));
    w.push((
        "vision_tower.embeddings.patch_embedding.weight".into(),
        vec![v.hidden, 3, v.patch, v.patch],
        rng.fill(v.hidden * 3 * v.patch * v.patch, 0.02),
    ));
    w.push(("vision_tower.embeddings.patch_embedding.bias".into(), vec![v.hidden], vec![0.0; v.hidden]));
    w.push((
        "vision_tower.embeddings.position_embedding.weight".into(),
        vec![patches, v.hidden],
        rng.fill(patches * v.hidden, 0.02),
    ));
    for l in 0..v.layers {
        let p = format!("vision_tower.encoder.layers.{l}");
        norm(&mut w, &format!("{p}.layer_norm1"), v.hidden, true);
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            linear(&mut w, &mut rng, &format!("{p}.self_attn.{proj}"), v.hidden, v.hidden, true);
        }
        norm(&mut w, &format!("{p}.layer_norm2"), v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.mlp.fc1"), v.mlp, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.mlp.fc2"), v.hidden, v.mlp, true);
    }
    norm(&mut w, "vision_tower.post_layernorm", v.hidden, true);
    linear(&mut w, &mut rng, "multi_modal_projector.linear_1", t.hidden, v.hidden, true);
    linear(&mut w, &mut rng, "multi_modal_projector.linear_2", t.hidden, t.hidden, true);
    text_weights(&mut w, &mut rng, &t, "language_model.model.", "language_model.lm_head.weight");
    write(&dir.join("model.safetensors"), &w, dtype)?;
    let tile = v.image_size;
    let pinpoints: Vec<[usize; 2]> = (1..=3).flat_map(|r| (1..=3).map(move |c| [r * tile, c * tile])).collect();
    let config = json!({
        "model_type": "llava_onevision", "architectures": ["LlavaOnevisionForConditionalGeneration"],
        "image_token_index": image_id, "video_token_index": video_id, "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": pinpoints, "projector_hidden_act": "gelu", "multimodal_projector_bias": true,
        "tie_word_embeddings": false,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": v.hidden, "intermediate_size": v.mlp,
            "num_hidden_layers": v.layers, "num_attention_heads": v.heads, "image_size": v.image_size,
            "patch_size": v.patch, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
            "vision_use_head": false},
        "text_config": text_config(&t),
        "tokensieve_note": "random weights (tokensieve init-model): answers are meaningless",
    });
    write_text(dir, "config.json", &serde_json::to_string_pretty(&config).unwrap_or_default())?;
    let processor = json!({"image_processor_type": "LlavaOnevisionImageProcessor",
        "size": {"height": v.image_size, "width": v.image_size}, "resample": 3, "do_resize": true,
        "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "do_pad": true, "do_convert_rgb": true, "image_grid_pinpoints": pinpoints});
    write_text(dir, "preprocessor_config.json", &serde_json::to_string_pretty(&processor).unwrap_or_default())
}

/// Writes a random `qwen2_5_vl` checkpoint of `shape` into `dir`, in transformers 5's layout (`model.visual.*`,
/// `model.language_model.*`, `lm_head.weight`) with its image and video processor configs (the released
/// checkpoints' pixel bounds).
pub fn write_qwen2_5_vl(
    dir: &Path,
    shape: &QwenVlShape,
    seed: u64,
    dtype: StoreAs,
) -> Result<(), RandomCheckpointError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| RandomCheckpointError::Io { path: dir.display().to_string(), source })?;
    let (v, t) = (&shape.vision, shape.text);
    let tail = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"];
    let ids = write_tokenizer_with(dir, t.vocab, &tail)?;
    let mut rng = Normal::new(seed);
    let mut w: Tensors = Vec::new();
    let values = 3 * 2 * 14 * 14;
    w.push((
        "model.visual.patch_embed.proj.weight".into(),
        vec![v.hidden, 3, 2, 14, 14],
        rng.fill(v.hidden * values, 0.02),
    ));
    for l in 0..v.depth {
        let p = format!("model.visual.blocks.{l}");
        norm(&mut w, &format!("{p}.norm1"), v.hidden, false);
        norm(&mut w, &format!("{p}.norm2"), v.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.attn.qkv"), 3 * v.hidden, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.attn.proj"), v.hidden, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.mlp.gate_proj"), v.mlp, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.mlp.up_proj"), v.mlp, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.mlp.down_proj"), v.hidden, v.mlp, true);
    }
    norm(&mut w, "model.visual.merger.ln_q", v.hidden, false);
    linear(&mut w, &mut rng, "model.visual.merger.mlp.0", 4 * v.hidden, 4 * v.hidden, true);
    linear(&mut w, &mut rng, "model.visual.merger.mlp.2", t.hidden, 4 * v.hidden, true);
    text_weights(&mut w, &mut rng, &t, "model.language_model.", "lm_head.weight");
    write(&dir.join("model.safetensors"), &w, dtype)?;
    let head = t.hidden / t.heads;
    // transformers' default [16, 24, 24] for a head width of 128, scaled for others.
    let section = [head / 8, 3 * head / 16, head / 2 - head / 8 - 3 * head / 16];
    let mut text = text_config(&t);
    text["model_type"] = json!("qwen2_5_vl_text");
    text["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section});
    let config = json!({
        "model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "vision_start_token_id": ids[0], "vision_end_token_id": ids[1], "image_token_id": ids[2],
        "video_token_id": ids[3], "tie_word_embeddings": false,
        "vision_config": {"model_type": "qwen2_5_vl", "depth": v.depth, "hidden_size": v.hidden,
            "intermediate_size": v.mlp, "num_heads": v.heads, "patch_size": 14, "temporal_patch_size": 2,
            "spatial_merge_size": 2, "window_size": 112, "fullatt_block_indexes": v.full_attention,
            "out_hidden_size": t.hidden, "tokens_per_second": 2, "in_channels": 3, "hidden_act": "silu"},
        "text_config": text,
        "tokensieve_note": "random weights (tokensieve init-model): answers are meaningless",
    });
    write_text(dir, "config.json", &serde_json::to_string_pretty(&config).unwrap_or_default())?;
    let processor = |kind: &str, name: &str, min: u64, max: u64| {
        json!({kind: name, "do_resize": true, "resample": 3, "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true, "image_mean": crate::random_checkpoint::CLIP_MEAN,
            "image_std": crate::random_checkpoint::CLIP_STD, "do_convert_rgb": true, "min_pixels": min,
            "max_pixels": max, "size": {"shortest_edge": min, "longest_edge": max}, "patch_size": 14,
            "temporal_patch_size": 2, "merge_size": 2})
    };
    let image = processor("image_processor_type", "Qwen2VLImageProcessor", 56 * 56, 28 * 28 * 1280);
    write_text(dir, "preprocessor_config.json", &serde_json::to_string_pretty(&image).unwrap_or_default())?;
    let video = processor("video_processor_type", "Qwen2VLVideoProcessor", 128 * 28 * 28, 28 * 28 * 768);
    write_text(dir, "video_preprocessor_config.json", &serde_json::to_string_pretty(&video).unwrap_or_default())
}

/// A Qwen3-VL model's shape (patch 16, 2 frames per temporal patch, 2 x 2 merger, a 48 x 48 learned position table,
/// DeepStack mergers after `deepstack` blocks; a Qwen3 decoder with head width `head_dim`).
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen3VlShape {
    /// Vision blocks.
    pub depth: usize,
    /// Vision width.
    pub hidden: usize,
    /// Vision attention heads.
    pub heads: usize,
    /// Vision MLP width.
    pub mlp: usize,
    /// Blocks whose output feeds a DeepStack merger.
    pub deepstack: Vec<usize>,
    /// The language model.
    pub text: TextShape,
    /// The decoder's head width (`head_dim`; 128 in the released models, for the real `mrope_section` [24, 20,
    /// 20]), independent of `hidden / heads`.
    pub head_dim: usize,
    /// The output head shares the input embeddings (`tie_word_embeddings`, as the 2B and 4B checkpoints do).
    pub tied: bool,
}

impl Qwen3VlShape {
    /// Small and fast, with the real geometry (patch 16, 2304 learned positions, DeepStack, head width 128).
    pub fn demo() -> Self {
        Qwen3VlShape {
            depth: 4,
            hidden: 128,
            heads: 2,
            mlp: 256,
            deepstack: vec![1, 2],
            text: TextShape { hidden: 512, layers: 6, heads: 4, kv_heads: 2, mlp: 1024, vocab: 1024 },
            head_dim: 128,
            tied: false,
        }
    }

    /// The shapes of `Qwen3-VL-4B-Instruct`: vision 24 blocks x 1024 (16 heads, MLP 4096, DeepStack after blocks
    /// 5, 11, 17), a Qwen3 decoder of 36 layers x 2560 (32 query and 8 key-value heads of width 128, MLP 9728) with
    /// tied embeddings; about 4.4 B parameters.
    pub fn qwen3_vl_4b() -> Self {
        Qwen3VlShape {
            depth: 24,
            hidden: 1024,
            heads: 16,
            mlp: 4096,
            deepstack: vec![5, 11, 17],
            text: TextShape { hidden: 2560, layers: 36, heads: 32, kv_heads: 8, mlp: 9728, vocab: 151936 },
            head_dim: 128,
            tied: true,
        }
    }
}

/// Writes a random `qwen3_vl` checkpoint of `shape` into `dir`, in transformers 5's layout (`model.visual.*` with
/// `pos_embed` and `deepstack_merger_list`, `model.language_model.*` with q/k head norms, `lm_head.weight`) and the
/// released checkpoints' processor configs (mean and std 0.5; the video bounds on all frames together).
pub fn write_qwen3_vl(
    dir: &Path,
    shape: &Qwen3VlShape,
    seed: u64,
    dtype: StoreAs,
) -> Result<(), RandomCheckpointError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| RandomCheckpointError::Io { path: dir.display().to_string(), source })?;
    let (v, t) = (shape, shape.text);
    let tail = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"];
    let ids = write_tokenizer_with(dir, t.vocab, &tail)?;
    let mut rng = Normal::new(seed);
    let mut w: Tensors = Vec::new();
    let (patch, entries) = (16, 2304);
    w.push((
        "model.visual.patch_embed.proj.weight".into(),
        vec![v.hidden, 3, 2, patch, patch],
        rng.fill(v.hidden * 3 * 2 * patch * patch, 0.02),
    ));
    w.push(("model.visual.patch_embed.proj.bias".into(), vec![v.hidden], vec![0.0; v.hidden]));
    w.push(("model.visual.pos_embed.weight".into(), vec![entries, v.hidden], rng.fill(entries * v.hidden, 0.02)));
    for l in 0..v.depth {
        let p = format!("model.visual.blocks.{l}");
        norm(&mut w, &format!("{p}.norm1"), v.hidden, true);
        norm(&mut w, &format!("{p}.norm2"), v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.attn.qkv"), 3 * v.hidden, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.attn.proj"), v.hidden, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.mlp.linear_fc1"), v.mlp, v.hidden, true);
        linear(&mut w, &mut rng, &format!("{p}.mlp.linear_fc2"), v.hidden, v.mlp, true);
    }
    let wide = 4 * v.hidden;
    let merger = |w: &mut Tensors, rng: &mut Normal, p: &str, norm_width: usize| {
        norm(w, &format!("{p}.norm"), norm_width, true);
        linear(w, rng, &format!("{p}.linear_fc1"), wide, wide, true);
        linear(w, rng, &format!("{p}.linear_fc2"), t.hidden, wide, true);
    };
    merger(&mut w, &mut rng, "model.visual.merger", v.hidden);
    for i in 0..v.deepstack.len() {
        merger(&mut w, &mut rng, &format!("model.visual.deepstack_merger_list.{i}"), wide);
    }
    let head = shape.head_dim;
    let m = "model.language_model.";
    w.push((format!("{m}embed_tokens.weight"), vec![t.vocab, t.hidden], rng.fill(t.vocab * t.hidden, 0.02)));
    for l in 0..t.layers {
        let p = format!("{m}layers.{l}");
        norm(&mut w, &format!("{p}.input_layernorm"), t.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.self_attn.q_proj"), t.heads * head, t.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.self_attn.k_proj"), t.kv_heads * head, t.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.self_attn.v_proj"), t.kv_heads * head, t.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.self_attn.o_proj"), t.hidden, t.heads * head, false);
        norm(&mut w, &format!("{p}.self_attn.q_norm"), head, false);
        norm(&mut w, &format!("{p}.self_attn.k_norm"), head, false);
        norm(&mut w, &format!("{p}.post_attention_layernorm"), t.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.mlp.gate_proj"), t.mlp, t.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.mlp.up_proj"), t.mlp, t.hidden, false);
        linear(&mut w, &mut rng, &format!("{p}.mlp.down_proj"), t.hidden, t.mlp, false);
    }
    norm(&mut w, &format!("{m}norm"), t.hidden, false);
    if !shape.tied {
        w.push(("lm_head.weight".into(), vec![t.vocab, t.hidden], rng.fill(t.vocab * t.hidden, 0.02)));
    }
    write(&dir.join("model.safetensors"), &w, dtype)?;
    // transformers' default [24, 20, 20] for a head width of 128, scaled for others.
    let section = [3 * head / 16, 5 * head / 32, head / 2 - 3 * head / 16 - 5 * head / 32];
    let mut text = text_config(&t);
    text["model_type"] = json!("qwen3_vl_text");
    text["head_dim"] = json!(head);
    text["tie_word_embeddings"] = json!(shape.tied);
    text["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": section,
        "mrope_interleaved": true});
    let config = json!({
        "model_type": "qwen3_vl", "architectures": ["Qwen3VLForConditionalGeneration"],
        "vision_start_token_id": ids[0], "vision_end_token_id": ids[1], "image_token_id": ids[2],
        "video_token_id": ids[3], "tie_word_embeddings": shape.tied,
        "vision_config": {"model_type": "qwen3_vl", "depth": v.depth, "hidden_size": v.hidden,
            "intermediate_size": v.mlp, "num_heads": v.heads, "patch_size": patch, "temporal_patch_size": 2,
            "spatial_merge_size": 2, "out_hidden_size": t.hidden, "num_position_embeddings": entries,
            "deepstack_visual_indexes": v.deepstack, "in_channels": 3, "hidden_act": "gelu_pytorch_tanh"},
        "text_config": text,
        "tokensieve_note": "random weights (tokensieve init-model): answers are meaningless",
    });
    write_text(dir, "config.json", &serde_json::to_string_pretty(&config).unwrap_or_default())?;
    let processor = |kind: &str, name: &str, min: u64, max: u64| {
        json!({kind: name, "do_resize": true, "resample": 3, "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "do_convert_rgb": true, "size": {"shortest_edge": min, "longest_edge": max}, "patch_size": patch,
            "temporal_patch_size": 2, "merge_size": 2, "fps": 2})
    };
    let image = processor("image_processor_type", "Qwen2VLImageProcessor", 65536, 16777216);
    write_text(dir, "preprocessor_config.json", &serde_json::to_string_pretty(&image).unwrap_or_default())?;
    let video = processor("video_processor_type", "Qwen3VLVideoProcessor", 4096, 25165824);
    write_text(dir, "video_preprocessor_config.json", &serde_json::to_string_pretty(&video).unwrap_or_default())
}

/// OpenAI CLIP's normalisation (Qwen-VL's processors use it).
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Writes a random `qwen2` causal LM of `shape` into `dir` (for decoder-only benchmarks).
pub fn write_qwen2(dir: &Path, shape: &TextShape, seed: u64, dtype: StoreAs) -> Result<(), RandomCheckpointError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| RandomCheckpointError::Io { path: dir.display().to_string(), source })?;
    write_tokenizer(dir, shape.vocab)?;
    let mut rng = Normal::new(seed);
    let mut w: Tensors = Vec::new();
    text_weights(&mut w, &mut rng, shape, "model.", "lm_head.weight");
    write(&dir.join("model.safetensors"), &w, dtype)?;
    write_text(dir, "config.json", &serde_json::to_string_pretty(&text_config(shape)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_are_seeded_with_the_right_moments() {
        let a = Normal::new(7).fill(20000, 0.02);
        assert_eq!(a, Normal::new(7).fill(20000, 0.02));
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let std = (a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!(mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3, "mean {mean}, std {std}");
    }
}
