//! A language model alone on libtorch, for `tokensieve forward` and `tokensieve ask` without visual input: a GGUF
//! file (llama architecture) or a Hugging Face `llama` / `qwen2` directory, with its tokenizer and chat template.
//! Vision-language models go through the QA engine (`ask.rs`).

use super::ask::{AskArgs, ForwardArgs, Prefill};
use super::{emit, CliError};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tokensieve::models::chat_template::ChatTemplate;
use tokensieve::models::gguf::Gguf;
use tokensieve::models::linear::DecoderWeights;
use tokensieve::models::llama::{KvCache, Llama};
use tokensieve::models::safetensors::Checkpoint;
use tokensieve::models::tokenizer::TextTokenizer;

struct Loaded {
    model: Llama,
    tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
}

/// A Hugging Face directory's language model (a `llama`/`qwen2` checkpoint, or the LM inside a LLaVA one), its
/// tokenizer and the chat template of `tokenizer_config.json`.
fn load_hf(dir: &Path, on: Compute) -> Result<Loaded, CliError> {
    let runtime = |e: &dyn std::fmt::Display| CliError::runtime(e.to_string(), None);
    let tokenizer = TextTokenizer::from_hf_dir(dir).map_err(|e| runtime(&e))?;
    let template = ChatTemplate::from_hf_dir(dir).map_err(|e| runtime(&e))?;
    let kind = match on.dtype {
        Some(kind) => kind,
        None => {
            let stored = Checkpoint::open(dir).map_err(|e| runtime(&e))?.float_dtype();
            tokensieve::models::runtime::auto_dtype(stored, on.device)
        }
    };
    let mut model = Llama::from_hf_dir_as(dir, on.device, kind).map_err(|e| runtime(&e))?;
    model.set_weights(on.weights).map_err(|e| runtime(&e))?;
    Ok(Loaded { model, tokenizer, template })
}

/// Where and how a language model computes: the device, the dtype (`None`: `--dtype auto`, the stored dtype where
/// the device computes it natively; a GGUF file's quantised blocks are dequantised to f32) and the linear weights.
#[derive(Clone, Copy)]
struct Compute {
    device: tch::Device,
    dtype: Option<tch::Kind>,
    weights: DecoderWeights,
}

impl Compute {
    /// What `--backend`, `--dtype`, `--precision` and `--device` ask for; a language model alone runs on torch.
    fn from_flags(backend: &super::BackendFlags, device: Option<&str>, model: &Path) -> Result<Self, CliError> {
        use tokensieve::pipeline::engine::EngineChoice;
        match backend.choice(device)? {
            EngineChoice::Torch { device, dtype, weights } => Ok(Compute { device, dtype, weights }),
            #[cfg(feature = "onnx")]
            EngineChoice::Onnx { .. } => Err(CliError::usage(
                format!("{}: a language model alone runs on the torch backend", model.display()),
                "drop --backend onnx (ONNX exports of vision-language models run with --video or --image)",
            )),
        }
    }
}

fn load(path: &Path, on: Compute) -> Result<Loaded, CliError> {
    if path.is_dir() {
        return load_hf(path, on);
    }
    if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
        return Err(CliError::usage(
            format!("{}: not a .gguf file or a model directory", path.display()),
            "pass a .gguf file (for example the setup's llm/SmolLM2-135M-Instruct.Q4_1.gguf) or a model directory",
        ));
    }
    let runtime = |e: &dyn std::fmt::Display| CliError::runtime(e.to_string(), None);
    let g = Gguf::open(path).map_err(|e| runtime(&e))?;
    let tokenizer = TextTokenizer::from_gguf(&g).map_err(|e| runtime(&e))?;
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or_default();
    let template = match g.metadata.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        Some(source) => Some(
            ChatTemplate::new(source, &token(tokenizer.bos), &token(tokenizer.eos.first().copied()))
                .map_err(|e| runtime(&e))?,
        ),
        None => None,
    };
    let mut model =
        Llama::from_gguf_as(path, on.device, on.dtype.unwrap_or(tch::Kind::Float)).map_err(|e| runtime(&e))?;
    model.set_weights(on.weights).map_err(|e| runtime(&e))?;
    Ok(Loaded { model, tokenizer, template })
}

fn prompt_ids(l: &Loaded, text: &str, raw: bool) -> Result<Vec<u32>, CliError> {
    let rendered = match (&l.template, raw) {
        (Some(t), false) => t
            .render(&json!([{"role": "user", "content": text}]), true)
            .map_err(|e| CliError::runtime(format!("chat template: {e}"), None))?,
        _ => text.to_string(),
    };
    l.tokenizer.encode(&rendered).map_err(|e| CliError::runtime(e.to_string(), None))
}

/// The last position's logits of the prompt (through the chat template unless `--raw`; a directory's prompt is
/// used verbatim, as before).
pub(super) fn forward(args: &ForwardArgs) -> Result<Prefill, CliError> {
    let runtime = |e: &dyn std::fmt::Display| CliError::runtime(e.to_string(), None);
    let compute = Compute::from_flags(&args.backend, None, &args.model)?;
    let device = compute.device;
    let (logits, prompt_tokens, tokenizer) = if args.model.is_dir() {
        let dir = &args.model;
        let config: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| {
                CliError::usage(
                    format!("{}: {e}", dir.join("config.json").display()),
                    "pass a model directory or a .gguf file",
                )
            })
            .and_then(|t| serde_json::from_str(&t).map_err(|e| runtime(&e)))?;
        let model_type = config["model_type"].as_str().unwrap_or_default();
        if !matches!(model_type, "llama" | "qwen2") {
            return Err(CliError::usage(
                format!("{}: model_type `{model_type}` is not supported", dir.display()),
                "supported: llama, qwen2 and the vision-language directories of `ask` (llama GGUF files too)",
            ));
        }
        let l = load_hf(dir, compute)?;
        let ids: Vec<i64> =
            l.tokenizer.encode(&args.prompt).map_err(|e| runtime(&e))?.iter().map(|&t| t as i64).collect();
        let logits = l.model.forward(&ids_tensor(&ids, device)?, &mut KvCache::default()).map_err(|e| runtime(&e))?;
        (logits, ids.len(), l.tokenizer)
    } else {
        let l = load(&args.model, compute)?;
        let ids = prompt_ids(&l, &args.prompt, args.raw)?;
        let input: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let logits = l.model.forward(&ids_tensor(&input, device)?, &mut KvCache::default()).map_err(|e| runtime(&e))?;
        (logits, ids.len(), l.tokenizer)
    };
    let logits: Vec<f32> = logits.f_reshape([-1]).and_then(Vec::try_from).map_err(|e| runtime(&e))?;
    Ok(Prefill { logits, prompt_tokens, visual_tokens: 0, tokenizer })
}

/// Answers `args.question` with the language model at `model`, streaming unless `--json`.
pub(super) fn ask(
    args: &AskArgs,
    model: &Path,
    sampling: tokensieve::models::sampling::Sampling,
) -> Result<(), CliError> {
    let mut picker = tokensieve::models::sampling::TokenPicker::new(sampling);
    let compute = Compute::from_flags(&args.backend, args.device.as_deref(), model)?;
    let on = compute.device;
    let l = load(model, compute)?;
    let ids = prompt_ids(&l, &args.question, false)?;
    let start = Instant::now();
    let runtime = |e: tokensieve::models::llama::LlamaError| CliError::runtime(e.to_string(), None);
    let tensor = |ids: &[i64]| ids_tensor(ids, on);
    let mut cache = KvCache::default();
    let input: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let logits = l.model.forward(&tensor(&input)?, &mut cache).map_err(runtime)?;
    let first = picker.next(&logits).map_err(|e| CliError::runtime(e.to_string(), None))?;
    let first_token_ms = start.elapsed().as_secs_f64() * 1e3;
    let stream = !args.json;
    let mut step = |token: i64| -> Result<i64, CliError> {
        let logits = l.model.forward(&tensor(&[token])?, &mut cache).map_err(runtime)?;
        picker.next(&logits).map_err(|e| CliError::runtime(e.to_string(), None))
    };
    let mut on_text = |piece: &str| {
        let mut out = std::io::stdout().lock();
        !stream || out.write_all(piece.as_bytes()).and_then(|_| out.flush()).is_ok()
    };
    let generated = tokensieve::models::sampling::generate_text(
        &l.tokenizer,
        args.max_new_tokens,
        &args.stop,
        first,
        &mut step,
        &mut on_text,
    )?;
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let (answer, generated) = (generated.answer, generated.tokens);
    let first_token_ms = (generated > 0).then_some(first_token_ms);
    if args.json {
        let record = json!({"prompt_tokens": ids.len(), "generated_tokens": generated, "visual_tokens": 0,
            "ttft_ms": first_token_ms, "total_ms": total_ms, "kv_bytes": cache.bytes()});
        emit(&format!("{}\n", json!({"answer": answer, "record": record})))
    } else {
        emit("\n")
    }
}

/// Token ids as a `[1, S]` tensor on `device`.
fn ids_tensor(ids: &[i64], device: tch::Device) -> Result<tch::Tensor, CliError> {
    tch::Tensor::from_slice(ids)
        .f_unsqueeze(0)
        .and_then(|t| t.f_to_device(device))
        .map_err(|e| CliError::runtime(format!("libtorch: {}", tokensieve::models::weights::brief(&e)), None))
}
