//! `tokensieve forward` and `tokensieve ask` for language models stored as GGUF (llama architecture, e.g. the
//! setup's SmolLM2-135M-Instruct). Vision-language checkpoints arrive with the models and pipeline work; until
//! then image and video inputs are refused with that explanation.

use super::{emit, CliError};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokensieve::models::chat_template::ChatTemplate;
use tokensieve::models::gguf::Gguf;
use tokensieve::models::llama::{KvCache, Llama};
use tokensieve::models::tokenizer::TextTokenizer;

/// Arguments of `forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// A GGUF language model file.
    #[arg(long)]
    model: PathBuf,
    /// The prompt (one user turn through the model's chat template unless --raw).
    #[arg(long)]
    prompt: String,
    /// Use the prompt verbatim.
    #[arg(long)]
    raw: bool,
    /// Images (vision-language models only).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Write the last position's logits `[V]` as .npy.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ask`.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// A GGUF language model file.
    #[arg(long)]
    model: PathBuf,
    /// The question.
    question: String,
    /// Images (vision-language models only).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// A video (vision-language models only).
    #[arg(long)]
    video: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Print JSON (answer and record) instead of streaming.
    #[arg(long)]
    json: bool,
}

struct Loaded {
    model: Llama,
    tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
}

fn load(path: &Path) -> Result<Loaded, CliError> {
    if path.is_dir() || path.extension().and_then(|e| e.to_str()) != Some("gguf") {
        return Err(CliError::usage(
            format!("{}: only GGUF language models are supported so far", path.display()),
            "pass a .gguf file (for example the setup's llm/SmolLM2-135M-Instruct.Q4_1.gguf)",
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
    let model = Llama::from_gguf(path, tch::Device::cuda_if_available()).map_err(|e| runtime(&e))?;
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

fn refuse_visual(images: &[PathBuf], video: Option<&PathBuf>) -> Result<(), CliError> {
    if !images.is_empty() || video.is_some() {
        return Err(CliError::usage(
            "image and video inputs need a vision-language checkpoint, which is not supported yet",
            "run the language model alone (no --image/--video)",
        ));
    }
    Ok(())
}

pub fn forward(args: ForwardArgs) -> Result<(), CliError> {
    refuse_visual(&args.image, None)?;
    let l = load(&args.model)?;
    let ids = prompt_ids(&l, &args.prompt, args.raw)?;
    let start = Instant::now();
    let input: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let logits = l
        .model
        .forward(&tch::Tensor::from_slice(&input).unsqueeze(0), &mut KvCache::default())
        .map_err(|e| CliError::runtime(e.to_string(), None))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let values: Vec<f32> =
        Vec::try_from(logits.reshape([-1])).map_err(|e: tch::TchError| CliError::runtime(e.to_string(), None))?;
    if let Some(path) = &args.logits_out {
        tokensieve::npy::write_f32(path, &[values.len()], &values)
            .map_err(|e| CliError::runtime(e.to_string(), None))?;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let top: Vec<_> = order
        .iter()
        .take(5)
        .map(|&i| json!({"id": i, "token": l.tokenizer.token(i as u32), "logit": values[i]}))
        .collect();
    if args.json {
        emit(&format!(
            "{}\n",
            json!({"model": args.model, "prompt_tokens": ids.len(), "vocab": values.len(), "top": top, "elapsed_ms": ms})
        ))
    } else {
        emit(&format!(
            "{} prompt tokens, prefill {ms:.1} ms; top next tokens: {}\n",
            ids.len(),
            serde_json::to_string(&top).unwrap_or_default()
        ))
    }
}

pub fn ask(args: AskArgs) -> Result<(), CliError> {
    refuse_visual(&args.image, args.video.as_ref())?;
    let l = load(&args.model)?;
    let ids = prompt_ids(&l, &args.question, false)?;
    let start = Instant::now();
    let mut first_token_ms = None;
    let mut generated: Vec<u32> = Vec::new();
    let mut shown = String::new();
    let stream = !args.json;
    let cache = l
        .model
        .generate(&ids, args.max_new_tokens, &l.tokenizer.eos, |t| {
            first_token_ms.get_or_insert(start.elapsed().as_secs_f64() * 1e3);
            generated.push(t);
            if stream {
                // Print what the new token adds to the decoded text (tokens can split characters).
                if let Ok(text) = l.tokenizer.decode(&generated) {
                    if let Some(delta) = text.strip_prefix(&shown) {
                        let mut out = std::io::stdout().lock();
                        if out.write_all(delta.as_bytes()).and_then(|_| out.flush()).is_err() {
                            return false;
                        }
                    }
                    shown = text;
                }
            }
            true
        })
        .map_err(|e| CliError::runtime(e.to_string(), None))?;
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let answer = l.tokenizer.decode(&generated).map_err(|e| CliError::runtime(e.to_string(), None))?;
    if args.json {
        let record = json!({"prompt_tokens": ids.len(), "generated_tokens": generated.len(), "visual_tokens": 0,
            "ttft_ms": first_token_ms, "total_ms": total_ms, "kv_bytes": cache.bytes()});
        emit(&format!("{}\n", json!({"answer": answer, "record": record})))
    } else {
        emit("\n")
    }
}
