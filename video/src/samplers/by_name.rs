//! Frame samplers by name, in the one parameter syntax of the project (`name:key=value,...`), for the pipeline and
//! `tokensieve sample` and the Python package's `tokensieve.sample`: which frames of a video reach the vision tower.
//!
//! | spec | picks | parameters (defaults) |
//! |---|---|---|
//! | `uniform` | lmms-eval's `linspace(0, N−1, k)`, both ends | `frames=8` |
//! | `uniform-interior` | VLMEvalKit's `i·N/(k+1)`, ends excluded | `frames=8` |
//! | `fps` | one frame every `1/rate` s, at most `max` | `rate=1`, `max=64` |
//! | `dcode` | D-CoDe: `candidates` uniform frames, embedded (8x8 thumbnails, or a dual encoder's image embeddings through [`Sampler::pick_with`]), a share uniform and the rest by content change | `frames=8`, `candidates=50`, `uniform_ratio=0.85` |
//!
//! F2C ranks frames by their relevance to the question, so it needs a [`super::FrameScorer`] and the question;
//! `tokensieve sample --sampler f2c --relevance clip:MODEL --query Q` runs it (or `--relevance R.npy` with scores
//! computed elsewhere); it is not one of these query-free specs.

use super::{dcode, fps_indices, uniform_indices, EmbedError, FrameEmbedder, SampleError, ThumbnailEmbedder, Uniform};
use crate::{decode_at, VideoError, VideoInfo};
use serde_json::{json, Value};
use std::path::Path;
use tokensieve_pruners::params::{parse_spec, ParamSpec, Params};
use tokensieve_pruners::PruneError;

/// Why frames could not be picked.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// A bad spec (unknown name or parameter).
    #[error(transparent)]
    Spec(#[from] PruneError),
    /// The sampler refused its input.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// Decoding the candidate thumbnails failed.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// The frame embedder failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// A frame sampler with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    /// Evenly spaced frames, both ends included (lmms-eval).
    Uniform {
        /// Frames to pick.
        frames: usize,
    },
    /// Evenly spaced frames, ends excluded (VLMEvalKit).
    UniformInterior {
        /// Frames to pick.
        frames: usize,
    },
    /// A fixed rate.
    Fps {
        /// Frames per second.
        rate: f64,
        /// At most this many.
        max: usize,
    },
    /// D-CoDe's content-aware frame selection.
    DCode {
        /// Frames to pick.
        frames: usize,
        /// Uniform candidates it chooses from.
        candidates: usize,
        /// Share of the frames taken uniformly.
        uniform_ratio: f64,
    },
}

/// Every sampler name with its parameters.
pub const SAMPLERS: [(&str, &[ParamSpec]); 4] = [
    ("uniform", &[ParamSpec { name: "frames", default: "8", help: "frames to pick" }]),
    ("uniform-interior", &[ParamSpec { name: "frames", default: "8", help: "frames to pick" }]),
    (
        "fps",
        &[
            ParamSpec { name: "rate", default: "1", help: "frames per second" },
            ParamSpec { name: "max", default: "64", help: "at most this many frames" },
        ],
    ),
    (
        "dcode",
        &[
            ParamSpec { name: "frames", default: "8", help: "frames to pick" },
            ParamSpec { name: "candidates", default: "50", help: "uniform candidates embedded and chosen from" },
            ParamSpec { name: "uniform_ratio", default: "0.85", help: "share of the frames taken uniformly" },
        ],
    ),
];

impl Sampler {
    /// Parses `uniform:frames=16`, `fps:rate=0.5,max=32`, `dcode:frames=8`, ...
    pub fn from_spec(spec: &str) -> Result<Self, SamplerError> {
        let (name, given) = parse_spec(spec)?;
        let Some((_, specs)) = SAMPLERS.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = SAMPLERS.iter().map(|(n, _)| *n).collect();
            return Err(PruneError::Param {
                method: name,
                param: "sampler".into(),
                reason: format!("is unknown (known: {})", known.join(", ")),
            }
            .into());
        };
        let p = Params::new(&name, specs, &given)?;
        Ok(match name.as_str() {
            "uniform" => Sampler::Uniform { frames: p.int_at_least("frames", 1)? },
            "uniform-interior" => Sampler::UniformInterior { frames: p.int_at_least("frames", 1)? },
            "fps" => Sampler::Fps { rate: p.float_in("rate", 1e-6, 1e6)?, max: p.int_at_least("max", 1)? },
            _ => Sampler::DCode {
                frames: p.int_at_least("frames", 1)?,
                candidates: p.int_at_least("candidates", 1)?,
                uniform_ratio: p.float_in("uniform_ratio", 0.0, 1.0)?,
            },
        })
    }

    /// The spec name.
    pub fn name(&self) -> &'static str {
        match self {
            Sampler::Uniform { .. } => "uniform",
            Sampler::UniformInterior { .. } => "uniform-interior",
            Sampler::Fps { .. } => "fps",
            Sampler::DCode { .. } => "dcode",
        }
    }

    /// Frame indices of `path` (described by `info`) in ascending order, with a note for the record when the
    /// sampler made choices worth reporting. Asking for more frames than the video has gives every frame once, and
    /// the note says so (`{"frames_asked": k, "video_frames": n}`), so a record never claims frames that were not
    /// there.
    pub fn pick(&self, path: &Path, info: &VideoInfo) -> Result<(Vec<usize>, Option<Value>), SamplerError> {
        self.pick_with(path, info, &ThumbnailEmbedder::default())
    }

    /// [`Sampler::pick`] with the frame embedder content-aware samplers use (D-CoDe: a dual encoder's image
    /// embeddings, as its paper's CLIP ViT-L/14-336; [`Sampler::pick`] uses the 8x8 thumbnails). The note names
    /// the embedder.
    pub fn pick_with(
        &self,
        path: &Path,
        info: &VideoInfo,
        embedder: &dyn FrameEmbedder,
    ) -> Result<(Vec<usize>, Option<Value>), SamplerError> {
        let n = info.frames;
        let clamped = |asked: usize| (asked > n).then(|| json!({"frames_asked": asked, "video_frames": n}));
        Ok(match *self {
            Sampler::Uniform { frames } => (uniform_indices(n, frames, Uniform::Inclusive)?, clamped(frames)),
            Sampler::UniformInterior { frames } => (uniform_indices(n, frames, Uniform::Interior)?, clamped(frames)),
            Sampler::Fps { rate, max } => (fps_indices(n, info.fps, rate, max)?, None),
            Sampler::DCode { frames, candidates, uniform_ratio } => {
                let candidates = uniform_indices(n, candidates, Uniform::Inclusive)?;
                let times: Vec<f64> = candidates.iter().map(|&i| i as f64 / info.fps).collect();
                let (w, h) =
                    if info.rotation % 180 == 90 { (info.height, info.width) } else { (info.width, info.height) };
                let (w, h) = embedder.decode_size(w, h);
                let embeddings = embed_in_batches(path, &times, (w, h), embedder)?;
                let picked = dcode::select(&embeddings, frames, uniform_ratio)?;
                let mut note = json!({"candidates": candidates.len(), "embedder": embedder.name(),
                    "uniform_ratio": uniform_ratio});
                if let (Some(extra), Some(map)) = (clamped(frames), note.as_object_mut()) {
                    map.extend(extra.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
                }
                (picked.into_iter().map(|i| candidates[i]).collect(), Some(note))
            }
        })
    }
}

/// Frames decoded and embedded [`EMBED_BATCH`] at a time, so memory stays one batch of full-size frames.
fn embed_in_batches(
    path: &Path,
    times: &[f64],
    (w, h): (u32, u32),
    embedder: &dyn FrameEmbedder,
) -> Result<Vec<Vec<f32>>, SamplerError> {
    let mut out = Vec::with_capacity(times.len());
    for chunk in times.chunks(EMBED_BATCH) {
        out.extend(embedder.embed(&decode_at(path, chunk, w, h)?.frames)?);
    }
    Ok(out)
}

/// Candidate frames decoded at once by content-aware samplers.
pub const EMBED_BATCH: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults_and_errors_name_the_problem() {
        assert_eq!(Sampler::from_spec("uniform").unwrap(), Sampler::Uniform { frames: 8 });
        assert_eq!(Sampler::from_spec("fps:rate=0.5").unwrap(), Sampler::Fps { rate: 0.5, max: 64 });
        assert_eq!(
            Sampler::from_spec("dcode:frames=4,candidates=20").unwrap(),
            Sampler::DCode { frames: 4, candidates: 20, uniform_ratio: 0.85 }
        );
        assert!(Sampler::from_spec("uniform:frames=0").unwrap_err().to_string().contains("frames"));
        assert!(Sampler::from_spec("f2c").unwrap_err().to_string().contains("known: uniform"));
        assert!(Sampler::from_spec("uniform:fps=2").unwrap_err().to_string().contains("fps"));
    }

    #[test]
    fn more_frames_than_the_video_has_gives_each_once_with_a_note() {
        let info = VideoInfo { duration: 10.0, fps: 25.0, frames: 250, width: 64, height: 64, rotation: 0 };
        let nowhere = Path::new("unused-by-uniform.mp4");
        let (picked, note) = Sampler::Uniform { frames: 100_000 }.pick(nowhere, &info).unwrap();
        assert_eq!(picked, (0..250).collect::<Vec<_>>());
        assert_eq!(note, Some(json!({"frames_asked": 100_000, "video_frames": 250})));
        let (picked, note) = Sampler::UniformInterior { frames: 8 }.pick(nowhere, &info).unwrap();
        assert_eq!((picked.len(), note), (8, None));
    }
}
