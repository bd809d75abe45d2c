//! Subcommands and the error type the binary prints.

#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
mod ask;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
mod bench;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
mod compress;
mod doctor;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
mod eval;
mod init_model;
#[cfg(all(feature = "torch", feature = "video"))]
mod llm;
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
mod plot;
mod prune;
#[cfg(feature = "video")]
mod sample;
mod score;

use clap::{Parser, Subcommand};

/// Send vision-language models fewer visual tokens.
#[derive(Debug, Parser)]
#[command(name = "tokensieve", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report the backends, libraries and cached assets this build can use.
    Doctor(doctor::Args),
    /// Select visual tokens from a feature matrix with any registered method.
    Prune(Box<prune::Args>),
    /// Pick frames of a video with a sampler and report their timestamps (optionally save them as PNG).
    #[cfg(feature = "video")]
    Sample(Box<sample::Args>),
    /// Score predictions made by any system (caption metrics with pycocoevalcap's definitions).
    Score(score::Args),
    /// Run one prefill of a language model and report (or save) the next-token logits.
    #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
    Forward(Box<ask::ForwardArgs>),
    /// Ask a model about a video, images or camera views (or a language model alone); streams the answer.
    #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
    Ask(Box<ask::AskArgs>),
    /// Run frames through the vision tower and a pruner; draw what was kept and write the record.
    #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
    Compress(Box<compress::Args>),
    /// Run the pipeline at several budgets and report tokens, FLOPs, stage times, TTFT, KV bytes and a plot.
    #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
    Bench(Box<bench::Args>),
    /// Answer a benchmark with the pipeline (DriveLM, NuScenes-QA, LingoQA, Video-MME, MLVU, LongVideoBench,
    /// EgoSchema, NExT-QA): per-sample JSONL, resume, shards, results.json.
    #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
    Eval(Box<eval::Args>),
    /// Write a random-weight LLaVA-OneVision model (demo or Qwen2-0.5B + SigLIP-so400m shapes).
    InitModel(init_model::Args),
    /// Join `eval --shard` output folders into one result.
    #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
    Merge(Box<eval::MergeArgs>),
}

/// A failure the binary reports on one line.
#[derive(Debug)]
pub struct CliError {
    /// The cause.
    pub message: String,
    /// What to try.
    pub hint: Option<String>,
    /// Exit code: 2 usage, 1 runtime.
    pub code: i32,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError { message: message.into(), hint: Some(hint.into()), code: 2 }
    }

    /// A runtime error (exit 1).
    pub fn runtime(message: impl Into<String>, hint: Option<String>) -> Self {
        CliError { message: message.into(), hint, code: 1 }
    }
}

/// Which backend runs a model: flags shared by `forward`, `ask`, `compress`, `bench` and `eval`.
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
#[derive(Debug, Clone, clap::Args)]
pub struct BackendFlags {
    /// `torch` (libtorch; CUDA when available; a Hugging Face `llava`/`llava_onevision`/`qwen2_5_vl`/`qwen3_vl`
    /// directory) or `onnx` (ONNX Runtime on the CPU; a folder written by models/export/export_onnx.py). Default:
    /// torch when this build has it.
    #[arg(long, default_value = DEFAULT_BACKEND, value_parser = ["torch", "onnx"])]
    pub backend: String,
    /// Which graph files of an ONNX export to load: fp32, fp16, q8 (= quantized), int8, uint8, q4, q4f16, bnb4.
    /// On torch, `q8` holds the decoder's linear weights as int8 with one scale per output row (a CPU decode mode:
    /// a quarter of f32's bytes read per token) and `fp32` (the default) keeps them dense in the compute dtype.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Compute dtype on torch: `auto` (the default) computes in the checkpoint's stored dtype where the device does
    /// it natively (CUDA; a CPU with AVX512-BF16 for bf16), else f32, as transformers' `dtype="auto"` does; or
    /// f32, f16, bf16.
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "f16", "bf16"])]
    pub dtype: String,
    /// ONNX Runtime intra-op threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Views (frames, tiles) the vision tower encodes at once; 0 picks as many as fit 256 MiB of the tower's
    /// work. Peak memory then follows the batch, not the number of frames.
    #[arg(long, default_value_t = 0)]
    pub encode_batch: usize,
}

/// The backend `--backend` names when not given: libtorch where the build has it.
#[cfg(all(feature = "torch", feature = "video"))]
const DEFAULT_BACKEND: &str = "torch";
#[cfg(all(not(feature = "torch"), feature = "onnx", feature = "video"))]
const DEFAULT_BACKEND: &str = "onnx";

#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
impl BackendFlags {
    /// Loads `model` on `choice` with the tower batch `--encode-batch` asks for.
    pub fn load(
        &self,
        model: &std::path::Path,
        choice: tokensieve::pipeline::engine::EngineChoice,
    ) -> Result<tokensieve::pipeline::engine::Engine, tokensieve::pipeline::qa::QaError> {
        let mut engine = tokensieve::pipeline::engine::Engine::load(model, choice)?;
        engine.set_encode_batch((self.encode_batch > 0).then_some(self.encode_batch));
        Ok(engine)
    }

    /// Refuses the ONNX-only flags when the torch backend runs (`--precision` other than fp32 and q8,
    /// `--threads`).
    pub fn torch_only(&self) -> Result<(), CliError> {
        if !matches!(self.precision.as_str(), "fp32" | "q8" | "quantized") {
            return Err(CliError::usage(
                format!("--precision {} chooses ONNX graph files (torch takes fp32 or q8)", self.precision),
                "add --backend onnx, or use --dtype and --precision q8 with the torch backend",
            ));
        }
        if self.threads != 0 {
            return Err(CliError::usage(
                "--threads sets ONNX Runtime's sessions",
                "add --backend onnx (libtorch uses one thread per core)",
            ));
        }
        Ok(())
    }

    /// On the onnx backend a model folder must be an export (an `onnx/` folder inside): a usage error otherwise.
    pub fn check_model(&self, model: &std::path::Path) -> Result<(), CliError> {
        if self.backend == "onnx" && model.is_dir() && !model.join("onnx").is_dir() {
            return Err(CliError::usage(
                format!("{}: no onnx/ folder, so not an ONNX export", model.display()),
                "pass the folder models/export/export_onnx.py wrote, or use --backend torch",
            ));
        }
        Ok(())
    }

    /// The engine to load: torch on `device` (`cpu`, `cuda`; CUDA when available if `None`) in `--dtype` with the
    /// decoder weights `--precision` says, or ONNX Runtime with the precision and threads asked for.
    /// Flags of the other backend are usage errors rather than silently ignored.
    pub fn choice(&self, device: Option<&str>) -> Result<tokensieve::pipeline::engine::EngineChoice, CliError> {
        #[allow(unused_imports)]
        use tokensieve::pipeline::engine::EngineChoice;
        if self.backend == "torch" {
            #[cfg(feature = "torch")]
            {
                use tokensieve::models::linear::DecoderWeights;
                self.torch_only()?;
                let dtype = match self.dtype.as_str() {
                    "f16" => Some(tch::Kind::Half),
                    "bf16" => Some(tch::Kind::BFloat16),
                    "f32" => Some(tch::Kind::Float),
                    _ => None,
                };
                let weights = if self.precision == "fp32" { DecoderWeights::Dense } else { DecoderWeights::Int8 };
                // Int8 weights are a CPU mode: without `--device` (or where a command has none) they run there.
                let device = match (device, weights) {
                    (None, DecoderWeights::Int8) => tch::Device::Cpu,
                    _ => torch_device(device)?,
                };
                if weights == DecoderWeights::Int8 && device != tch::Device::Cpu {
                    return Err(CliError::usage(
                        "--precision q8 on the torch backend is a CPU decode mode (int8 weight-only matmuls)",
                        "add --device cpu, or use --dtype bf16 on CUDA",
                    ));
                }
                return Ok(EngineChoice::Torch { device, dtype, weights });
            }
            #[cfg(not(feature = "torch"))]
            return Err(CliError::usage(
                "this build has no torch backend",
                "use --backend onnx with an export folder, or build with --features torch",
            ));
        }
        if let Some(device) = device {
            return Err(CliError::usage(
                format!("--device {device} applies to the torch backend"),
                "the onnx backend runs on the CPU; drop --device",
            ));
        }
        #[cfg(feature = "onnx")]
        {
            use tokensieve::models::onnx_session::{OnnxOptions, Precision};
            if !matches!(self.dtype.as_str(), "auto" | "f32") {
                return Err(CliError::usage(
                    "--dtype applies to the torch backend",
                    "pick the ONNX graph files with --precision fp16 (or q8, q4, ...)",
                ));
            }
            let precision =
                Precision::parse(&self.precision).map_err(|e| CliError::usage(e, "for example --precision q8"))?;
            let options = OnnxOptions { intra_threads: self.threads, ..OnnxOptions::default() };
            Ok(EngineChoice::Onnx { precision, options })
        }
        #[cfg(not(feature = "onnx"))]
        Err(CliError::usage("this build has no onnx backend", "build with the `onnx` feature (a default one)"))
    }
}

/// `--device`: CUDA when available unless told; asking for CUDA where there is none is a usage error.
#[cfg(all(feature = "torch", feature = "video"))]
pub(super) fn torch_device(choice: Option<&str>) -> Result<tch::Device, CliError> {
    match choice {
        None => Ok(tch::Device::cuda_if_available()),
        Some("cpu") => Ok(tch::Device::Cpu),
        Some(_) if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
        Some(other) => Err(CliError::usage(format!("--device {other}: no CUDA device is visible"), "use --device cpu")),
    }
}

/// `--model`: an existing path as given, else a Hugging Face id resolved (or fetched) in the hub cache.
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub fn model_arg(name: &str) -> Result<std::path::PathBuf, String> {
    tokensieve::hub::resolve(name).map_err(|e| format!("{e} ({})", e.hint()))
}

impl From<tokensieve::models::tokenizer::TokenizerError> for CliError {
    fn from(e: tokensieve::models::tokenizer::TokenizerError) -> Self {
        CliError::runtime(e.to_string(), None)
    }
}

/// Writes `text` to standard output. A closed pipe (`tokensieve prune --list | head`) ends the output quietly
/// instead of panicking, as command-line tools are expected to.
pub fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::runtime(format!("stdout: {e}"), None)),
        _ => Ok(()),
    }
}

#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
/// A progress bar on stderr with the rate and ETA; indicatif draws nothing when stderr is not a terminal, so piped
/// and CI output stay clean.
pub fn progress_bar(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:30}} {{pos}}/{{len}} {what}  {{per_sec}}  ETA {{eta_precise}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// What the model commands that pick frames themselves (`compress`, `bench`) give a sampler that ranks frames by the
/// question (F2C) or embeds them (D-CoDe): the loaded model (F2C's ladder), the dual encoder, the question.
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
#[derive(Clone, Copy)]
pub struct Ranking<'a> {
    /// The loaded model.
    pub engine: &'a tokensieve::pipeline::engine::Engine,
    /// `--relevance`'s dual encoder, if any.
    pub provider: Option<&'a dyn tokensieve::pipeline::relevance::PatchRelevance>,
    /// The question (`None`: the command has none).
    pub query: Option<&'a str>,
}

/// `spec` (with `frames` filling in its frame count) as a sampler, and F2C's ladder from `ranking` when it samples a
/// `video`.
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
fn sampler_with(
    spec: &str,
    frames: usize,
    ranking: Option<Ranking<'_>>,
    video: bool,
) -> Result<(tokensieve::pipeline::sampler::Sampler, Vec<tokensieve::video::samplers::f2c::Rung>), CliError> {
    use tokensieve::pipeline::sampler::Sampler;
    let sampler = Sampler::from_spec(&ask::with_frames(spec, frames))
        .map_err(|e| CliError::usage(e.to_string(), "for example --sampler uniform:frames=8 or --sampler fps:fps=1"))?;
    let ladder = match (sampler.needs_question() && video, ranking) {
        (false, _) => Vec::new(),
        (true, Some(Ranking { engine, provider: Some(_), query: Some(_) })) => {
            vec![engine.video_frame_rung().map_err(|e| CliError::usage(e.to_string(), "use another --sampler"))?]
        }
        (true, Some(Ranking { query: None, .. })) => {
            return Err(CliError::usage(
                "--sampler f2c ranks frames by the question, and none was given",
                "give the question last, and --relevance clip:MODEL",
            ))
        }
        (true, _) => {
            return Err(CliError::usage(
                "--sampler f2c ranks frames by the question: it needs a dual encoder",
                "add --relevance clip:MODEL or siglip:MODEL",
            ))
        }
    };
    Ok((sampler, ladder))
}

/// The question `ranking` gives `sampler`, on `ladder`.
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
fn question<'a>(
    sampler: &tokensieve::pipeline::sampler::Sampler,
    ranking: Option<Ranking<'a>>,
    ladder: &'a [tokensieve::video::samplers::f2c::Rung],
) -> Option<tokensieve::pipeline::builder::Question<'a>> {
    let r = ranking?;
    tokensieve::pipeline::builder::question_for(sampler, r.provider, ladder, r.query.unwrap_or_default())
}

/// Frames at their own resolution from `--video` (through the `sampler` spec, `frames` filling in its frame count;
/// F2C and D-CoDe take what `ranking` gives) or `--image` files, for the model commands: the pipeline's one media
/// loader.
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub fn frames_from(
    video: Option<&std::path::Path>,
    images: &[std::path::PathBuf],
    sampler: &str,
    frames: usize,
    ranking: Option<Ranking<'_>>,
) -> Result<Vec<tokensieve::video::Frame>, CliError> {
    use tokensieve::pipeline::builder::{load_media, Media};
    let media = match (video, images.is_empty()) {
        (Some(v), _) => Media::Video(v.to_path_buf()),
        (None, false) => Media::Images(images.to_vec()),
        (None, true) => {
            return Err(CliError::usage("give --video or --image", "for example --video clip.mp4 --frames 8"))
        }
    };
    let (sampler, ladder) = sampler_with(sampler, frames, ranking, video.is_some())?;
    load_media(&sampler, &media, question(&sampler, ranking, &ladder))
        .map(|m| m.frames)
        .map_err(|e| CliError::runtime(e.to_string(), Some("check the input file".into())))
}

/// The sampler's frames of `video`, decoded on a background thread as the engine asks for them (see
/// [`tokensieve::pipeline::frames::VideoStream`]).
#[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
pub fn video_stream(
    video: &std::path::Path,
    sampler: &str,
    frames: usize,
    ranking: Option<Ranking<'_>>,
) -> Result<tokensieve::pipeline::frames::VideoStream, CliError> {
    let (sampler, ladder) = sampler_with(sampler, frames, ranking, true)?;
    tokensieve::pipeline::builder::stream_video(&sampler, video, question(&sampler, ranking, &ladder))
        .map(|(stream, _, _)| stream)
        .map_err(|e| CliError::runtime(e.to_string(), Some("check the input file".into())))
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::InitModel(args) => init_model::run(args),
        Command::Prune(args) => prune::run(*args),
        #[cfg(feature = "video")]
        Command::Sample(args) => sample::run(*args),
        Command::Score(args) => score::run(args),
        #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
        Command::Forward(args) => ask::forward(*args),
        #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
        Command::Ask(args) => ask::ask(*args),
        #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
        Command::Compress(args) => compress::run(*args),
        #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
        Command::Bench(args) => bench::run(*args),
        #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
        Command::Eval(args) => eval::run(*args),
        #[cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]
        Command::Merge(args) => eval::merge(*args),
    }
}
