//! `tokensieve sample`: which frames of a video a sampler picks, with their decoded timestamps, optionally saved
//! as PNG files.

use super::{emit, CliError};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokensieve::npy;
use tokensieve::pipeline::relevance::{PatchRelevance, RelevanceSpec};
use tokensieve::pipeline::sampler::{f2c_pick, Sampler, SamplerError};
use tokensieve::video::samplers::{f2c, uniform_indices, Uniform};
use tokensieve::video::{decode_at, probe, Frame, VideoInfo};

/// Arguments of `sample`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The video file.
    video: PathBuf,
    /// `uniform` (lmms-eval, ends included), `uniform-interior` (VLMEvalKit), `fps`, `dcode` or `f2c`.
    #[arg(long, default_value = "uniform", value_parser = ["uniform", "uniform-interior", "fps", "dcode", "f2c"])]
    sampler: String,
    /// Frames to pick (for `fps`: the cap; for `f2c`: ignored, the token budget decides).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Frames per second for `fps`.
    #[arg(long)]
    fps: Option<f64>,
    /// Candidate frames (uniform) that `dcode` embeds and `f2c` scores with a dual encoder (D-CoDe's NUM_FRAMES).
    #[arg(long, default_value_t = 50)]
    candidates: usize,
    /// `dcode`: share of the frames taken uniformly.
    #[arg(long, default_value_t = 0.85)]
    uniform_ratio: f64,
    /// Where relevance comes from: `clip:MODEL` or `siglip:MODEL` (a CLIPModel / SiglipModel folder or Hugging Face
    /// id; `f2c` scores the `--candidates` frames against `--query`, `dcode` embeds its candidates with it), or for
    /// `f2c` a `[T]` .npy of scores (T candidates, uniform over the video).
    #[arg(long)]
    relevance: Option<String>,
    /// `f2c`: visual-token budget for the whole video.
    #[arg(long, default_value_t = 6272)]
    budget: usize,
    /// `f2c`: number of key clips.
    #[arg(long, default_value_t = 8)]
    anchors: usize,
    /// The question `f2c` ranks frames by (with `--relevance clip:MODEL|siglip:MODEL`); for a multiple-choice
    /// question give the question with its options, as F2C does.
    #[arg(long)]
    query: Option<String>,
    /// Device of the dual encoder: `cpu` or `cuda` (default: CUDA when present).
    #[arg(long)]
    device: Option<String>,
    /// Write the picked frames as PNG files here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn video_error(e: impl std::fmt::Display) -> CliError {
    CliError::runtime(e.to_string(), Some("check that the file is a video FFmpeg can decode".into()))
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::usage(e.to_string(), "see `tokensieve sample --help`")
}

fn times(info: &VideoInfo, indices: &[usize]) -> Vec<f64> {
    indices.iter().map(|&i| i as f64 / info.fps).collect()
}

/// Picks frame indices; returns them with a note for the record. The four samplers without a relevance input are
/// the pipeline's [`Sampler`]; F2C takes its relevance scores from a file.
fn pick(args: &Args, info: &VideoInfo) -> Result<(Vec<usize>, Option<serde_json::Value>), CliError> {
    let sampler = match args.sampler.as_str() {
        "uniform" => Some(Sampler::Uniform { frames: args.frames }),
        "uniform-interior" => Some(Sampler::UniformInterior { frames: args.frames }),
        "fps" => {
            let rate = args.fps.ok_or_else(|| CliError::usage("--sampler fps needs --fps R", "for example --fps 1"))?;
            Some(Sampler::Fps { rate, max: args.frames })
        }
        "dcode" => {
            Some(Sampler::DCode { frames: args.frames, candidates: args.candidates, uniform_ratio: args.uniform_ratio })
        }
        _ => None,
    };
    let spec = args.relevance.as_deref().map(RelevanceSpec::parse).transpose().map_err(usage)?;
    if let Some(sampler) = sampler {
        let picked = match (&spec, &sampler) {
            (None, _) => sampler.pick(&args.video, info),
            (Some(spec @ RelevanceSpec::Dual { .. }), Sampler::DCode { .. }) => {
                sampler.pick_with(&args.video, info, dual(args, spec)?.embedder())
            }
            (Some(spec), _) => {
                return Err(usage(format!(
                    "--relevance {} is for --sampler f2c (scores) or dcode (a dual encoder)",
                    spec.label()
                )))
            }
        };
        return picked.map_err(|e| match e {
            SamplerError::Video(v) => video_error(v),
            SamplerError::Embed(e) => CliError::runtime(e.to_string(), None),
            other => usage(other),
        });
    }
    let f2c = Sampler::F2c { candidates: args.candidates, anchors: args.anchors, budget: args.budget, min_clip: 4 };
    match &spec {
        None | Some(RelevanceSpec::Llm) => Err(CliError::usage(
            "f2c ranks frames by relevance to the question, which needs an image-text encoder",
            "pass --relevance clip:MODEL --query Q (or siglip:MODEL), or --relevance R.npy with one score per \
             candidate frame (candidates spread uniformly)",
        )),
        Some(RelevanceSpec::Scores(path)) => {
            let relevance = npy::read(path).map_err(|e| CliError::runtime(e.to_string(), None))?.data;
            let candidates = uniform_indices(info.frames, relevance.len(), Uniform::Inclusive).map_err(usage)?;
            let planner = f2c.f2c_planner(&f2c::ONEVISION_LADDER).ok_or_else(|| usage("f2c has no planner"))?;
            let (picked, note) = f2c_pick(&planner, &candidates, &relevance).map_err(usage)?;
            Ok((picked, Some(note)))
        }
        Some(spec @ RelevanceSpec::Dual { .. }) => {
            let query = args.query.as_deref().ok_or_else(|| {
                CliError::usage("f2c with a dual encoder scores frames against the question", "pass --query Q")
            })?;
            let provider = dual(args, spec)?;
            f2c.pick_scored(&args.video, info, provider.scorer(), query, &f2c::ONEVISION_LADDER).map_err(|e| match e {
                SamplerError::Video(v) => video_error(v),
                SamplerError::Embed(e) => CliError::runtime(e.to_string(), None),
                other => usage(other),
            })
        }
    }
}

/// The dual encoder `spec` names, on `--device` (the loader `ask` uses; a build without libtorch refuses there).
fn dual(args: &Args, spec: &RelevanceSpec) -> Result<Arc<dyn PatchRelevance>, CliError> {
    super::ask::relevance_provider(&spec.label(), args.device.as_deref())?
        .ok_or_else(|| CliError::usage(format!("--relevance {} is not a dual encoder", spec.label()), "clip:MODEL"))
}

fn save(frames: &[Frame], indices: &[usize], dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::runtime(format!("{}: {e}", dir.display()), None))?;
    for (f, i) in frames.iter().zip(indices) {
        let path = dir.join(format!("frame_{i:06}.png"));
        image::save_buffer(&path, &f.rgb, f.width, f.height, image::ExtendedColorType::Rgb8)
            .map_err(|e| CliError::runtime(format!("{}: {e}", path.display()), None))?;
    }
    Ok(())
}

pub fn run(args: Args) -> Result<(), CliError> {
    let dual = args.relevance.as_deref().is_some_and(|r| r.starts_with("clip:") || r.starts_with("siglip:"));
    if args.query.is_some() && !(dual && args.sampler == "f2c") {
        return Err(CliError::usage(
            "--query is what f2c scores frames against with a dual encoder",
            "use --sampler f2c --relevance clip:MODEL (or siglip:MODEL) with --query, or drop --query",
        ));
    }
    let info = probe(&args.video).map_err(video_error)?;
    let (indices, note) = pick(&args, &info)?;
    // Frames are decoded to report their real timestamps; small unless they are to be saved.
    let (w, h) = if args.out.is_some() { (info.width, info.height) } else { (32, 32) };
    let (w, h) = if info.rotation % 180 == 90 { (h, w) } else { (w, h) };
    let decoded = decode_at(&args.video, &times(&info, &indices), w, h).map_err(video_error)?;
    if let Some(dir) = &args.out {
        save(&decoded.frames, &indices, dir)?;
    }
    let frames: Vec<_> = indices
        .iter()
        .zip(&decoded.frames)
        .map(|(&i, f)| json!({"index": i, "timestamp": (f.timestamp * 1e6).round() / 1e6}))
        .collect();
    if args.json {
        let mut out = json!({"video": args.video, "sampler": args.sampler, "frames": frames});
        if let Some(note) = note {
            out["details"] = note;
        }
        if let Some(t) = decoded.stopped_at {
            out["stopped_at"] = json!(t);
        }
        emit(&format!("{out}\n"))
    } else {
        let mut text = format!(
            "{}: {} frames, {:.2} fps, {:.1} s; {} picked {}\n",
            args.video.display(),
            info.frames,
            info.fps,
            info.duration,
            args.sampler,
            indices.len()
        );
        for (i, f) in indices.iter().zip(&decoded.frames) {
            text += &format!("  frame {i:>7} at {:>9.3} s\n", f.timestamp);
        }
        if let Some(t) = decoded.stopped_at {
            text += &format!("  note: the stream ended at {t:.3} s, before the last requested frame\n");
        }
        if let Some(dir) = &args.out {
            text += &format!("  saved to {}\n", dir.display());
        }
        emit(&text)
    }
}
