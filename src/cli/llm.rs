//! `tokensieve forward` and `tokensieve ask`. `forward` runs one prefill of a GGUF language model (llama
//! architecture) or a Hugging Face directory (`llama`, `qwen2`, or `llava` with images) and writes the last
//! position's logits, the visual tokens and the CLS attention. `ask` answers with a GGUF language model alone, or
//! with a `llava` / `llava_onevision` directory about a video, images or camera views through the library's
//! [`tokensieve::pipeline::builder::Pipeline`].

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
    /// A GGUF language model file, a model directory, or a Hugging Face id (hub cache).
    #[arg(long, value_parser = super::model_arg)]
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
    /// A video (vision-language models only), sampled uniformly.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Frames to sample from the video.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Write the last position's logits `[V]` as .npy.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    /// Write the visual tokens after the projector `[N, D]` as .npy (LLaVA).
    #[arg(long)]
    features_out: Option<PathBuf>,
    /// Write the last ViT layer's CLS (or SigLIP probe) attention over the patches `[N]` as .npy (LLaVA).
    #[arg(long)]
    cls_attn_out: Option<PathBuf>,
    #[command(flatten)]
    backend: super::BackendFlags,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How a question's visual tokens are pruned: flags shared by `ask` and `eval`.
#[derive(Debug, clap::Args)]
pub struct PruningFlags {
    /// A pre-LLM pruner `name:key=value,...` (repeatable: applied in order).
    #[arg(long)]
    pub pruner: Vec<String>,
    /// Keep this many visual tokens (all frames together).
    #[arg(long, conflicts_with = "ratio")]
    pub keep: Option<usize>,
    /// Keep this fraction of the visual tokens.
    #[arg(long)]
    pub ratio: Option<f64>,
    /// In-decoder pruning: `fastv:layer=K,ratio=R` (R = fraction dropped), `pdrop:layers=8/16/24,lambda=0.5`,
    /// `todre-stage2:tau=0.1`.
    #[arg(long)]
    pub in_llm: Option<String>,
    /// Position ids after pre-LLM pruning: `original` (kept tokens keep theirs, with gaps) or `contiguous`
    /// (renumbered, as LLaVA-style reference code splicing a shorter encoder output does).
    #[arg(long, default_value = "original", value_parser = ["original", "contiguous"])]
    pub positions: String,
}

/// Arguments of `ask`.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// A GGUF language model file, a `llava`/`llava_onevision` directory, or a Hugging Face id found in the local
    /// hub cache.
    #[arg(long)]
    model: String,
    /// The question.
    question: String,
    /// Images (vision-language models only).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Camera views `CAM=IMAGE` (nuScenes names: CAM_FRONT, CAM_FRONT_LEFT, ...), repeatable.
    #[arg(long)]
    views: Vec<String>,
    /// A video (vision-language models only).
    #[arg(long)]
    video: Option<PathBuf>,
    /// Frame sampler `name:key=value,...` (uniform, uniform-interior, fps, dcode).
    #[arg(long, default_value = "uniform")]
    sampler: String,
    /// Frames to sample (for samplers with a `frames` parameter that the spec does not set).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// `cpu` or `cuda` (default: CUDA when available).
    #[arg(long, value_parser = ["cpu", "cuda"])]
    device: Option<String>,
    /// Compute dtype of a model directory: f32, f16 or bf16 (half precision is meant for CUDA).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    dtype: String,
    /// Sampling temperature; 0 (the default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampling (same seed, same answer).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this string (repeatable), besides the model's end-of-sequence tokens.
    #[arg(long)]
    stop: Vec<String>,
    #[command(flatten)]
    pruning: PruningFlags,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[command(flatten)]
    backend: super::BackendFlags,
    /// Print JSON (answer and record) instead of streaming.
    #[arg(long)]
    json: bool,
}

struct Loaded {
    model: Llama,
    tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
}

/// A Hugging Face directory's language model (a `llama`/`qwen2` checkpoint, or the LM inside a LLaVA one), its
/// tokenizer and the chat template of `tokenizer_config.json`.
fn load_hf(dir: &Path, device: tch::Device) -> Result<Loaded, CliError> {
    let runtime = |e: &dyn std::fmt::Display| CliError::runtime(e.to_string(), None);
    let tokenizer = TextTokenizer::from_hf_dir(dir).map_err(|e| runtime(&e))?;
    let template = ChatTemplate::from_hf_dir(dir).map_err(|e| runtime(&e))?;
    let model = Llama::from_hf_dir(dir, device).map_err(|e| runtime(&e))?;
    Ok(Loaded { model, tokenizer, template })
}

fn load(path: &Path, device: tch::Device) -> Result<Loaded, CliError> {
    if path.is_dir() {
        return load_hf(path, device);
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
    let model = Llama::from_gguf(path, device).map_err(|e| runtime(&e))?;
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

fn refuse_visual(visual: bool) -> Result<(), CliError> {
    if visual {
        return Err(CliError::usage(
            "image, video and view inputs need a llava or llava_onevision model directory (and the video feature)",
            "run the language model alone (no --image/--video/--views), or give a vision-language directory",
        ));
    }
    Ok(())
}

fn save(path: &Option<PathBuf>, t: &tch::Tensor) -> Result<(), CliError> {
    let Some(path) = path else { return Ok(()) };
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let values: Vec<f32> =
        Vec::try_from(t.reshape([-1])).map_err(|e: tch::TchError| CliError::runtime(e.to_string(), None))?;
    tokensieve::npy::write_f32(path, &shape, &values).map_err(|e| CliError::runtime(e.to_string(), None))
}

/// What one prefill produced.
struct Prefill {
    logits: tch::Tensor,
    prompt_tokens: usize,
    visual_tokens: usize,
    tokenizer: TextTokenizer,
}

/// Runs an ONNX export (`models/export/export_onnx.py`: config, tokenizer and processor files, `onnx/`) of a `llava`
/// or `llava_onevision` model: vision encoder (OneVision pooling or packing on the host), the visual tokens written at
/// the expanded placeholders, one merged-decoder prefill.
#[cfg(all(feature = "onnx", feature = "video"))]
fn forward_onnx(args: &ForwardArgs) -> Result<Prefill, CliError> {
    use tokensieve::pipeline::engine::EngineChoice;
    use tokensieve::pipeline::onnx_qa::OnnxQa;
    use tokensieve::pipeline::qa::{MediaKind, QaError};
    let runtime = |e: &dyn std::fmt::Display| CliError::runtime(e.to_string(), None);
    let EngineChoice::Onnx { precision, options } = args.backend.choice(None, tch::Kind::Float)? else {
        return Err(CliError::usage("forward_onnx runs the onnx backend", "pass --backend onnx"));
    };
    args.backend.check_model(&args.model)?;
    if args.image.is_empty() && args.video.is_none() {
        return Err(CliError::usage(
            "a vision-language prefill needs --image or --video",
            "for example --image photo.png --prompt \"<image> what is here\"",
        ));
    }
    let qa = OnnxQa::load(&args.model, precision, &options).map_err(|e| runtime(&e))?;
    let tokenizer = TextTokenizer::from_hf_dir(&args.model).map_err(|e| runtime(&e))?;
    let frames = super::frames_from(args.video.as_deref(), &args.image, args.frames)?;
    let kind = if args.video.is_some() { MediaKind::Video } else { MediaKind::Images };
    let p = qa.prefill(&frames, kind, &args.prompt, args.raw).map_err(|e| match e {
        QaError::Prompt(_) => CliError::usage(e.to_string(), "put <image> (or <video>) in the prompt"),
        e => runtime(&e),
    })?;
    let (n, d) = p.visual.dim();
    let visual: Vec<f32> = p.visual.into_iter().collect();
    save(&args.features_out, &tch::Tensor::from_slice(&visual).reshape([n as i64, d as i64]))?;
    if let Some(a) = &p.cls_attention {
        save(&args.cls_attn_out, &tch::Tensor::from_slice(a))?;
    }
    Ok(Prefill {
        logits: tch::Tensor::from_slice(&p.logits).unsqueeze(0),
        prompt_tokens: p.prompt_tokens,
        visual_tokens: n,
        tokenizer,
    })
}

#[cfg(not(all(feature = "onnx", feature = "video")))]
fn forward_onnx(_: &ForwardArgs) -> Result<Prefill, CliError> {
    Err(CliError::usage("this build has no onnx backend", "build with the default features plus torch"))
}

/// Runs a Hugging Face directory.
fn forward_hf(args: &ForwardArgs) -> Result<Prefill, CliError> {
    let dir = &args.model;
    let runtime = |e: &dyn std::fmt::Display| CliError::runtime(e.to_string(), None);
    let config: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| {
            CliError::usage(
                format!("{}: {e}", dir.join("config.json").display()),
                "pass a model directory or a .gguf file",
            )
        })
        .and_then(|t| serde_json::from_str(&t).map_err(|e| runtime(&e)))?;
    let tokenizer = TextTokenizer::from_hf_dir(dir).map_err(|e| runtime(&e))?;
    let device = tch::Device::cuda_if_available();
    let model_type = config["model_type"].as_str().unwrap_or_default();
    match model_type {
        #[cfg(not(feature = "video"))]
        "llava" | "llava_onevision" => Err(CliError::usage(
            "this build has no image preprocessing (the `video` feature), which llava needs",
            "build with --features torch,video",
        )),
        #[cfg(feature = "video")]
        "llava" | "llava_onevision" => {
            use tokensieve::pipeline::video_qa::{MediaKind, QaError, VideoQa};
            let qa = VideoQa::load(dir, device).map_err(|e| runtime(&e))?;
            if args.image.is_empty() && args.video.is_none() {
                return Err(CliError::usage(
                    "a vision-language prefill needs --image or --video",
                    "for example --image photo.png --prompt \"<image> what is here\"",
                ));
            }
            let frames = super::frames_from(args.video.as_deref(), &args.image, args.frames)?;
            let kind = if args.video.is_some() { MediaKind::Video } else { MediaKind::Images };
            let p = qa.prefill(&frames, kind, &args.prompt, args.raw).map_err(|e| match e {
                QaError::Prompt(_) | QaError::Model(tokensieve::models::llava::LlavaError::Placeholders { .. }) => {
                    CliError::usage(e.to_string(), "put <image> (or <video>) in the prompt")
                }
                e => runtime(&e),
            })?;
            let count = p.visual.size()[0] as usize;
            save(&args.features_out, &p.visual)?;
            if let Some(a) = &p.cls_attention {
                save(&args.cls_attn_out, a)?;
            }
            Ok(Prefill { logits: p.logits, prompt_tokens: p.prompt_tokens, visual_tokens: count, tokenizer })
        }
        "llama" | "qwen2" => {
            refuse_visual(!args.image.is_empty())?;
            let model = Llama::from_hf_dir(dir, device).map_err(|e| runtime(&e))?;
            let ids: Vec<i64> =
                tokenizer.encode(&args.prompt).map_err(|e| runtime(&e))?.iter().map(|&t| t as i64).collect();
            let logits = model
                .forward(&tch::Tensor::from_slice(&ids).unsqueeze(0).to_device(device), &mut KvCache::default())
                .map_err(|e| runtime(&e))?;
            Ok(Prefill { logits, prompt_tokens: ids.len(), visual_tokens: 0, tokenizer })
        }
        other => Err(CliError::usage(
            format!("{}: model_type `{other}` is not supported", dir.display()),
            "supported: llama, qwen2, llava, llava_onevision (directories) and llama GGUF files",
        )),
    }
}

pub fn forward(args: ForwardArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let Prefill { logits, prompt_tokens, visual_tokens, tokenizer } = if args.backend.backend == "onnx" {
        forward_onnx(&args)?
    } else if args.model.is_dir() {
        args.backend.torch_only()?;
        forward_hf(&args)?
    } else {
        refuse_visual(!args.image.is_empty())?;
        let l = load(&args.model, tch::Device::cuda_if_available())?;
        let ids = prompt_ids(&l, &args.prompt, args.raw)?;
        let input: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let logits = l
            .model
            .forward(&tch::Tensor::from_slice(&input).unsqueeze(0), &mut KvCache::default())
            .map_err(|e| CliError::runtime(e.to_string(), None))?;
        Prefill { logits, prompt_tokens: ids.len(), visual_tokens: 0, tokenizer: l.tokenizer }
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let values: Vec<f32> =
        Vec::try_from(logits.reshape([-1])).map_err(|e: tch::TchError| CliError::runtime(e.to_string(), None))?;
    save(&args.logits_out, &logits.reshape([-1]))?;
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let top: Vec<_> = order
        .iter()
        .take(5)
        .map(|&i| json!({"id": i, "token": tokenizer.token(i as u32), "logit": values[i]}))
        .collect();
    let record = json!({"model": args.model, "prompt_tokens": prompt_tokens, "visual_tokens": visual_tokens,
        "vocab": values.len(), "top": top, "elapsed_ms": ms});
    if args.json {
        emit(&format!("{record}\n"))
    } else {
        emit(&format!(
            "{prompt_tokens} prompt tokens ({visual_tokens} visual) in {ms:.1} ms; top next tokens: {}\n",
            serde_json::to_string(&top).unwrap_or_default()
        ))
    }
}

/// Pipeline settings from the `--pruner`, `--keep`/`--ratio` and `--in-llm` flags (shared by `ask` and `eval`).
#[cfg(feature = "video")]
pub(super) fn qa_options(
    flags: &PruningFlags,
    max_new_tokens: usize,
) -> Result<tokensieve::pipeline::video_qa::QaOptions, CliError> {
    use tokensieve::pruners::in_decoder::InDecoder;
    use tokensieve::pruners::{Budget, Method};
    let PruningFlags { pruner, keep, ratio, in_llm, positions } = flags;
    let (keep, ratio, in_llm) = (*keep, *ratio, in_llm.as_deref());
    let usage = |e: String| CliError::usage(e, "see `tokensieve ask --help`");
    let pruners = pruner
        .iter()
        .map(|p| Method::from_spec(p).map(|(m, _)| m).map_err(|e| usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let budget = match (keep, ratio) {
        (Some(k), _) => Budget::Keep(k),
        (None, Some(r)) => Budget::Ratio(r),
        (None, None) => Budget::Ratio(1.0),
    };
    budget.validate().map_err(|e| usage(e.to_string()))?;
    let in_llm = in_llm.map(InDecoder::from_spec).transpose().map_err(|e| usage(e.to_string()))?;
    Ok(tokensieve::pipeline::video_qa::QaOptions {
        pruners,
        budget,
        in_llm,
        positions: tokensieve::pipeline::qa::Positions::parse(positions).map_err(usage)?,
        ..tokensieve::pipeline::video_qa::QaOptions::new(max_new_tokens)
    })
}

/// `--temperature`, `--top-p`, `--seed`, checked.
fn sampling(args: &AskArgs) -> Result<tokensieve::models::sampling::Sampling, CliError> {
    let s =
        tokensieve::models::sampling::Sampling { temperature: args.temperature, top_p: args.top_p, seed: args.seed };
    s.validate().map_err(|e| CliError::usage(e, "for example --temperature 0.7 --top-p 0.9 --seed 1"))?;
    Ok(s)
}

/// `--device`: CUDA when available unless told; asking for CUDA where there is none is a usage error.
pub(super) fn device(choice: Option<&str>) -> Result<tch::Device, CliError> {
    match choice {
        None => Ok(tch::Device::cuda_if_available()),
        Some("cpu") => Ok(tch::Device::Cpu),
        Some(_) if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
        Some(other) => Err(CliError::usage(format!("--device {other}: no CUDA device is visible"), "use --device cpu")),
    }
}

/// Adds `frames=N` to a sampler spec that has a frame count and does not set it.
#[cfg(feature = "video")]
fn with_frames(spec: &str, frames: usize) -> String {
    let name = spec.split(':').next().unwrap_or(spec);
    let has_frames = ["uniform", "uniform-interior", "dcode"].contains(&name);
    if !has_frames || spec.contains("frames=") {
        spec.to_string()
    } else if spec.contains(':') {
        format!("{spec},frames={frames}")
    } else {
        format!("{spec}:frames={frames}")
    }
}

#[cfg(feature = "video")]
fn ask_llava(args: &AskArgs, model: &Path) -> Result<(), CliError> {
    use tokensieve::pipeline::builder::{Media, Pipeline, PipelineError};
    let usage = |e: PipelineError| CliError::usage(e.to_string(), "see `tokensieve ask --help`");
    let runtime = |e: PipelineError| CliError::runtime(e.to_string(), Some("check the input files".into()));
    let media = match (&args.video, args.image.is_empty(), args.views.is_empty()) {
        (Some(v), true, true) => Media::Video(v.clone()),
        (None, false, true) => Media::Images(args.image.clone()),
        (None, true, false) => Media::Views(
            args.views
                .iter()
                .map(|v| {
                    v.split_once('=').map(|(c, p)| (c.to_string(), PathBuf::from(p))).ok_or_else(|| {
                        CliError::usage(format!("--views {v} is not CAM=IMAGE"), "for example --views CAM_FRONT=f.jpg")
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(CliError::usage("give one of --video, --image or --views", "they cannot be mixed")),
    };
    use tokensieve::pipeline::engine::EngineChoice;
    let dtype = match args.dtype.as_str() {
        "f16" => tch::Kind::Half,
        "bf16" => tch::Kind::BFloat16,
        _ => tch::Kind::Float,
    };
    let mut builder = Pipeline::builder(model)
        .sampler(&with_frames(&args.sampler, args.frames))
        .map_err(usage)?
        .max_new_tokens(args.max_new_tokens);
    builder = match args.backend.choice(args.device.as_deref(), dtype)? {
        EngineChoice::Torch { device, dtype } => builder.device(device).dtype(dtype),
        #[cfg(feature = "onnx")]
        EngineChoice::Onnx { precision, options } => builder.onnx(precision, options),
    };
    for p in &args.pruning.pruner {
        builder = builder.pruner(p).map_err(usage)?;
    }
    builder = match (args.pruning.keep, args.pruning.ratio) {
        (Some(k), _) => builder.keep(k),
        (None, Some(r)) => builder.ratio(r),
        (None, None) => builder,
    };
    if let Some(spec) = &args.pruning.in_llm {
        builder = builder.in_llm(spec).map_err(usage)?;
    }
    let positions = tokensieve::pipeline::qa::Positions::parse(&args.pruning.positions)
        .map_err(|e| CliError::usage(e, "original or contiguous"))?;
    builder = builder.positions(positions);
    builder = builder.sampling(sampling(args)?).stop(args.stop.clone());
    let pipeline = builder.build().map_err(|e| match e {
        PipelineError::Spec(_) => usage(e),
        e => CliError::runtime(e.to_string(), Some("is it a llava or llava_onevision directory?".into())),
    })?;
    let loaded = pipeline.load(&media).map_err(|e| match e {
        PipelineError::Image(
            tokensieve::video::ImageError::Camera(_) | tokensieve::video::ImageError::DuplicateCamera(_),
        ) => usage(e),
        e => runtime(e),
    })?;
    let stream = !args.json;
    let mut out = std::io::stdout().lock();
    let answer = pipeline
        .answer_streaming(loaded, &args.question, &mut |piece| {
            !stream || out.write_all(piece.as_bytes()).and_then(|_| out.flush()).is_ok()
        })
        .map_err(runtime)?;
    drop(out);
    if args.json {
        emit(&format!("{}\n", json!({"answer": answer.text, "record": answer.record})))
    } else {
        emit("\n")
    }
}

pub fn ask(args: AskArgs) -> Result<(), CliError> {
    let gguf = args.model.ends_with(".gguf") && Path::new(&args.model).is_file();
    let model = if gguf {
        PathBuf::from(&args.model)
    } else {
        tokensieve::hub::resolve(&args.model).map_err(|e| CliError::usage(e.to_string(), e.hint()))?
    };
    let visual = !args.image.is_empty() || args.video.is_some() || !args.views.is_empty();
    args.backend.check_model(&model)?;
    if model.is_dir() && visual {
        #[cfg(feature = "video")]
        return ask_llava(&args, &model);
    }
    refuse_visual(visual)?;
    if args.backend.backend == "onnx" {
        return Err(CliError::usage(
            "the onnx backend runs vision-language exports (models/export/export_onnx.py)",
            "give --image, --views or --video with an export folder, or use --backend torch for a language model",
        ));
    }
    let mut picker = tokensieve::models::sampling::TokenPicker::new(sampling(&args)?);
    let on = device(args.device.as_deref())?;
    let l = load(&model, on)?;
    let ids = prompt_ids(&l, &args.question, false)?;
    let start = Instant::now();
    let runtime = |e: tokensieve::models::llama::LlamaError| CliError::runtime(e.to_string(), None);
    let tensor = |ids: &[i64]| tch::Tensor::from_slice(ids).unsqueeze(0).to_device(on);
    let mut cache = KvCache::default();
    let input: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let logits = l.model.forward(&tensor(&input), &mut cache).map_err(runtime)?;
    let first = picker.next(&logits).map_err(|e| CliError::runtime(e.to_string(), None))?;
    let first_token_ms = start.elapsed().as_secs_f64() * 1e3;
    let stream = !args.json;
    let mut step = |token: i64| -> Result<i64, CliError> {
        let logits = l.model.forward(&tensor(&[token]), &mut cache).map_err(runtime)?;
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
