//! `tokensieve forward` and `tokensieve ask` on vision-language models, through the one QA engine on either backend
//! (`forward`: one unpruned prefill writing the last position's logits, the visual tokens and the tower's
//! attention; `ask`: an answer about a video, images or camera views through the library's
//! [`tokensieve::pipeline::builder::Pipeline`]). A GGUF or Hugging Face language model alone goes to `llm.rs`
//! (libtorch builds only).

use super::{emit, CliError};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokensieve::models::tokenizer::TextTokenizer;

/// Arguments of `forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// A GGUF language model file, a model directory, or a Hugging Face id (hub cache).
    #[arg(long, value_parser = super::model_arg)]
    pub(super) model: PathBuf,
    /// The prompt (one user turn through the model's chat template unless --raw).
    #[arg(long)]
    pub(super) prompt: String,
    /// Use the prompt verbatim.
    #[arg(long)]
    pub(super) raw: bool,
    /// Images (vision-language models only).
    #[arg(long)]
    pub(super) image: Vec<PathBuf>,
    /// A video (vision-language models only), sampled uniformly.
    #[arg(long)]
    pub(super) video: Option<PathBuf>,
    /// Frames to sample from the video.
    #[arg(long, default_value_t = 8)]
    pub(super) frames: usize,
    /// Write the last position's logits `[V]` as .npy.
    #[arg(long)]
    pub(super) logits_out: Option<PathBuf>,
    /// Write the visual tokens after the projector `[N, D]` as .npy (LLaVA).
    #[arg(long)]
    pub(super) features_out: Option<PathBuf>,
    /// Write the last ViT layer's CLS (or SigLIP probe) attention over the patches `[N]` as .npy (LLaVA).
    #[arg(long)]
    pub(super) cls_attn_out: Option<PathBuf>,
    #[command(flatten)]
    pub(super) backend: super::BackendFlags,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
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
    /// In-decoder pruning (torch backend): `fastv:layer=K,ratio=R` (R = fraction dropped),
    /// `pdrop:layers=8/16/24,lambda=0.5`, `todre-stage2:tau=0.1`, `sparsevlm:retain=192` (text raters, recycling),
    /// `holitom-inner:layer=3,r=0.5` (merge into kept tokens), `dycoke-kv:layer=3,prune=0.8` (decode-time KV),
    /// `dart:layer=2,ratio=0.778` (key-norm pivots, least similar tokens).
    #[arg(long)]
    pub in_llm: Option<String>,
    /// Position ids after pre-LLM pruning: `original` (kept tokens keep theirs, with gaps) or `contiguous`
    /// (renumbered, as LLaVA-style reference code splicing a shorter encoder output does).
    #[arg(long, default_value = "original", value_parser = ["original", "contiguous"])]
    pub positions: String,
    /// How the budget is shared among frames: `global` (one budget, the methods choose across frames) or `frame`
    /// (each frame, temporal patch or image keeps its even share; the per-frame counts are known before encoding).
    #[arg(long, default_value = "global", value_parser = ["global", "frame"])]
    pub budget_scope: String,
    /// Where query-aware methods (`query`, `cdpruner`, `mmr:importance=relevance`) get relevance: `llm` (the VLM's
    /// own embeddings, the default) or a dual encoder `clip:MODEL` / `siglip:MODEL` (a CLIPModel / SiglipModel
    /// folder or Hugging Face id, on libtorch): its text embeddings of the question against its patch embeddings of
    /// the pixels the VLM saw.
    #[arg(long, default_value = "llm")]
    pub relevance: String,
}

/// The dual encoder a `--relevance` value names, on `device` (`None` for `llm`).
pub(super) fn relevance_provider(
    given: &str,
    device: Option<&str>,
) -> Result<Option<std::sync::Arc<dyn tokensieve::pipeline::relevance::PatchRelevance>>, CliError> {
    use tokensieve::pipeline::relevance::RelevanceSpec;
    let spec = RelevanceSpec::parse(given)
        .map_err(|e| CliError::usage(e.to_string(), "--relevance llm, clip:MODEL or siglip:MODEL"))?;
    match spec {
        RelevanceSpec::Llm => Ok(None),
        RelevanceSpec::Scores(_) => Err(CliError::usage(
            format!("--relevance {given}: per-frame scores are for `tokensieve sample --sampler f2c`"),
            "give llm, clip:MODEL or siglip:MODEL",
        )),
        spec @ RelevanceSpec::Dual { .. } => {
            use tokensieve::pipeline::relevance::DualProvider;
            #[cfg(feature = "torch")]
            let provider = DualProvider::load(&spec, super::torch_device(device)?);
            #[cfg(not(feature = "torch"))]
            let provider = {
                let _ = device;
                DualProvider::load(&spec)
            };
            let provider = provider.map_err(|e| {
                CliError::runtime(
                    e.to_string(),
                    Some(
                        "give a full CLIPModel or SiglipModel folder (both towers, tokenizer.json, \
                         preprocessor_config.json) or its export from models/export/export_dual_onnx.py"
                            .into(),
                    ),
                )
            })?;
            Ok(Some(std::sync::Arc::new(provider)))
        }
    }
}

/// Arguments of `ask`.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// A GGUF language model file, a `llava`/`llava_onevision`/`qwen2_5_vl`/`qwen3_vl` directory, or a Hugging Face
    /// id found in the local hub cache.
    #[arg(long)]
    pub(super) model: String,
    /// The question.
    pub(super) question: String,
    /// Images (vision-language models only).
    #[arg(long)]
    pub(super) image: Vec<PathBuf>,
    /// Camera views `CAM=IMAGE` (nuScenes names: CAM_FRONT, CAM_FRONT_LEFT, ...), repeatable.
    #[arg(long)]
    pub(super) views: Vec<String>,
    /// A video (vision-language models only).
    #[arg(long)]
    pub(super) video: Option<PathBuf>,
    /// Frame sampler `name:key=value,...` (uniform, uniform-interior, fps, dcode, or
    /// `f2c:candidates=64,anchors=8,budget=6272,min_clip=4` with `--relevance clip:MODEL|siglip:MODEL`: key clips
    /// around the frames most relevant to the question, within a visual-token budget).
    #[arg(long, default_value = "uniform")]
    pub(super) sampler: String,
    /// Frames to sample (for samplers with a `frames` parameter that the spec does not set).
    #[arg(long, default_value_t = 8)]
    pub(super) frames: usize,
    /// `cpu` or `cuda` (default: CUDA when available).
    #[arg(long, value_parser = ["cpu", "cuda"])]
    pub(super) device: Option<String>,
    /// Sampling temperature; 0 (the default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub(super) temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    pub(super) top_p: f64,
    /// Seed of the sampling (same seed, same answer).
    #[arg(long, default_value_t = 0)]
    pub(super) seed: u64,
    /// Stop before this string (repeatable), besides the model's end-of-sequence tokens.
    #[arg(long)]
    pub(super) stop: Vec<String>,
    #[command(flatten)]
    pub(super) pruning: PruningFlags,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub(super) max_new_tokens: usize,
    #[command(flatten)]
    pub(super) backend: super::BackendFlags,
    /// Print JSON (answer and record) instead of streaming.
    #[arg(long)]
    pub(super) json: bool,
    /// Write the prefill's last-position logits `[V]` (the pruned prompt's) as .npy.
    #[arg(long)]
    pub(super) logits_out: Option<PathBuf>,
}

/// What one prefill produced.
pub(super) struct Prefill {
    /// The last position's logits `[V]`.
    pub logits: Vec<f32>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Visual tokens in it.
    pub visual_tokens: usize,
    /// The tokenizer, to name the top tokens.
    pub tokenizer: TextTokenizer,
}

/// Writes `values` of `shape` as `.npy` when a path was given.
pub(super) fn save(path: &Option<PathBuf>, shape: &[usize], values: &[f32]) -> Result<(), CliError> {
    let Some(path) = path else { return Ok(()) };
    tokensieve::npy::write_f32(path, shape, values).map_err(|e| CliError::runtime(e.to_string(), None))
}

/// One unpruned prefill of a `llava` / `llava_onevision` model (a Hugging Face directory on torch, an export folder
/// on onnx): the visual tokens written at the expanded placeholders.
fn forward_vlm(args: &ForwardArgs) -> Result<Prefill, CliError> {
    use tokensieve::pipeline::qa::{MediaKind, QaError};
    let runtime = |e: &dyn std::fmt::Display| CliError::runtime(e.to_string(), None);
    let choice = args.backend.choice(None)?;
    args.backend.check_model(&args.model)?;
    if args.image.is_empty() && args.video.is_none() {
        return Err(CliError::usage(
            "a vision-language prefill needs --image or --video",
            "for example --image photo.png --prompt \"<image> what is here\"",
        ));
    }
    let qa = args.backend.load(&args.model, choice).map_err(|e| runtime(&e))?;
    let tokenizer = TextTokenizer::from_hf_dir(&args.model).map_err(|e| runtime(&e))?;
    let frames = super::frames_from(args.video.as_deref(), &args.image, "uniform", args.frames, None)?;
    let kind = if args.video.is_some() { MediaKind::Video } else { MediaKind::Images };
    let p = qa.prefill(&frames, kind, &args.prompt, args.raw).map_err(|e| match e {
        QaError::Prompt(_) => CliError::usage(e.to_string(), "put <image> (or <video>) in the prompt"),
        e => runtime(&e),
    })?;
    let (n, d) = p.visual.dim();
    save(&args.features_out, &[n, d], p.visual.as_standard_layout().as_slice().unwrap_or_default())?;
    if let Some(a) = &p.attention {
        save(&args.cls_attn_out, &[a.len()], a)?;
    }
    Ok(Prefill { logits: p.logits, prompt_tokens: p.prompt_tokens, visual_tokens: n, tokenizer })
}

/// The `model_type` of a model directory's `config.json`, if it has one.
fn model_type(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["model_type"].as_str().map(str::to_string)
}

/// A language model alone (GGUF file, `llama` / `qwen2` directory) on libtorch.
#[cfg(feature = "torch")]
fn lm_forward(args: &ForwardArgs) -> Result<Prefill, CliError> {
    super::llm::forward(args)
}

#[cfg(not(feature = "torch"))]
fn lm_forward(args: &ForwardArgs) -> Result<Prefill, CliError> {
    Err(CliError::usage(
        format!("{}: a language model alone runs on the torch backend, which this build lacks", args.model.display()),
        "give an ONNX export of a vision-language model, or build with --features torch",
    ))
}

fn refuse_visual(visual: bool) -> Result<(), CliError> {
    if visual {
        return Err(CliError::usage(
            format!(
                "image, video and view inputs need a vision-language model directory ({}; and the video feature)",
                tokensieve::models::arch::FAMILIES.join(", ")
            ),
            "run the language model alone (no --image/--video/--views), or give a vision-language directory",
        ));
    }
    Ok(())
}

pub fn forward(args: ForwardArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let vlm = args.model.is_dir()
        && model_type(&args.model).is_some_and(|t| tokensieve::models::arch::FAMILIES.contains(&t.as_str()));
    let Prefill { logits, prompt_tokens, visual_tokens, tokenizer } = if args.backend.backend == "onnx" || vlm {
        forward_vlm(&args)?
    } else {
        refuse_visual(!args.image.is_empty() || args.video.is_some())?;
        args.backend.torch_only()?;
        lm_forward(&args)?
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    save(&args.logits_out, &[logits.len()], &logits)?;
    let values = logits;
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
pub(super) fn qa_options(
    flags: &PruningFlags,
    max_new_tokens: usize,
) -> Result<tokensieve::pipeline::qa::QaOptions, CliError> {
    use tokensieve::pruners::in_decoder::InDecoder;
    use tokensieve::pruners::{Budget, Method};
    let PruningFlags { pruner, keep, ratio, in_llm, positions, budget_scope, relevance: _ } = flags;
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
    Ok(tokensieve::pipeline::qa::QaOptions {
        pruners,
        budget,
        in_llm,
        positions: tokensieve::pipeline::qa::Positions::parse(positions).map_err(usage)?,
        scope: tokensieve::pipeline::qa::BudgetScope::parse(budget_scope).map_err(usage)?,
        ..tokensieve::pipeline::qa::QaOptions::new(max_new_tokens)
    })
}

/// `--temperature`, `--top-p`, `--seed`, checked.
fn sampling(args: &AskArgs) -> Result<tokensieve::models::sampling::Sampling, CliError> {
    let s =
        tokensieve::models::sampling::Sampling { temperature: args.temperature, top_p: args.top_p, seed: args.seed };
    s.validate().map_err(|e| CliError::usage(e, "for example --temperature 0.7 --top-p 0.9 --seed 1"))?;
    Ok(s)
}

/// Adds `frames=N` to a sampler spec that has a frame count and does not set it.
pub(super) fn with_frames(spec: &str, frames: usize) -> String {
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

fn ask_vlm(args: &AskArgs, model: &Path) -> Result<(), CliError> {
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
    let mut builder = Pipeline::builder(model)
        .sampler(&with_frames(&args.sampler, args.frames))
        .map_err(usage)?
        .max_new_tokens(args.max_new_tokens);
    builder = match args.backend.choice(args.device.as_deref())? {
        #[cfg(feature = "torch")]
        EngineChoice::Torch { device, dtype, weights } => builder.device(device).dtype(dtype).decoder_weights(weights),
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
    let scope = tokensieve::pipeline::qa::BudgetScope::parse(&args.pruning.budget_scope)
        .map_err(|e| CliError::usage(e, "global or frame"))?;
    builder = builder.positions(positions).budget_scope(scope);
    if let Some(provider) = relevance_provider(&args.pruning.relevance, args.device.as_deref())? {
        builder = builder.relevance(provider);
    }
    builder = builder.sampling(sampling(args)?).stop(args.stop.clone()).keep_logits(args.logits_out.is_some());
    if args.backend.encode_batch > 0 {
        builder = builder.encode_batch(args.backend.encode_batch);
    }
    let pipeline = builder.build().map_err(|e| match e {
        PipelineError::Spec(_) | PipelineError::NeedsScorer { .. } => usage(e),
        e => CliError::runtime(
            e.to_string(),
            Some(format!("is it a vision-language directory ({})?", tokensieve::models::arch::FAMILIES.join(", "))),
        ),
    })?;
    let stream = !args.json;
    let mut out = std::io::stdout().lock();
    // A video streams through the model as it is decoded; images are decoded first (a bad camera name is usage).
    let answer = pipeline
        .ask_streaming(&media, &args.question, &mut |piece| {
            !stream || out.write_all(piece.as_bytes()).and_then(|_| out.flush()).is_ok()
        })
        .map_err(|e| match e {
            PipelineError::Image(
                tokensieve::video::ImageError::Camera(_) | tokensieve::video::ImageError::DuplicateCamera(_),
            ) => usage(e),
            e => runtime(e),
        })?;
    drop(out);
    if let Some(logits) = &answer.record.qa.first_logits {
        save(&args.logits_out, &[logits.len()], logits)?;
    }
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
        return ask_vlm(&args, &model);
    }
    refuse_visual(visual)?;
    if args.logits_out.is_some() {
        return Err(CliError::usage(
            "--logits-out writes a vision-language prompt's logits",
            "`tokensieve forward --logits-out` writes a language model's",
        ));
    }
    if args.backend.backend == "onnx" {
        return Err(CliError::usage(
            "the onnx backend runs vision-language exports (models/export/export_onnx.py)",
            "give --image, --views or --video with an export folder, or use --backend torch for a language model",
        ));
    }
    lm_ask(&args, &model)
}

/// A language model alone (GGUF file, `llama` / `qwen2` directory) on libtorch.
#[cfg(feature = "torch")]
fn lm_ask(args: &AskArgs, model: &Path) -> Result<(), CliError> {
    super::llm::ask(args, model, sampling(args)?)
}

#[cfg(not(feature = "torch"))]
fn lm_ask(args: &AskArgs, _: &Path) -> Result<(), CliError> {
    Err(CliError::usage(
        format!("{}: a language model alone runs on the torch backend, which this build lacks", args.model),
        "give --image, --views or --video with an ONNX export, or build with --features torch",
    ))
}
