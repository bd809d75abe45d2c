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
//! | `f2c` | F2C: `candidates` uniform frames scored against the question by an image-text model, key clips around the best within the token budget ([`Sampler::pick_scored`]) | `candidates=64`, `anchors=8`, `budget=6272`, `min_clip=4` |
//!
//! F2C needs a [`super::FrameScorer`] and the question, so [`Sampler::pick`] refuses it; `tokensieve sample
//! --sampler f2c --relevance clip:MODEL --query Q` and `ask --sampler f2c --relevance clip:MODEL` run it
//! (`sample --relevance R.npy` takes scores computed elsewhere).

use super::f2c::{F2c, Rung};
use super::{
    dcode, fps_indices, uniform_indices, EmbedError, FrameEmbedder, FrameScorer, SampleError, ThumbnailEmbedder,
    Uniform,
};
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
    /// F2C key clips around the frames most relevant to the question ([`Sampler::pick_scored`]).
    F2c {
        /// Uniform candidate frames scored against the question.
        candidates: usize,
        /// Key clips.
        anchors: usize,
        /// Visual tokens for the whole video.
        budget: usize,
        /// Shortest clip before the resolution drops.
        min_clip: usize,
    },
}

/// Every sampler name with its parameters.
pub const SAMPLERS: [(&str, &[ParamSpec]); 5] = [
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
    (
        "f2c",
        &[
            ParamSpec {
                name: "candidates",
                default: "64",
                help: "uniform candidate frames scored against the question",
            },
            ParamSpec { name: "anchors", default: "8", help: "key clips (K)" },
            ParamSpec { name: "budget", default: "6272", help: "visual tokens for the whole video (B)" },
            ParamSpec { name: "min_clip", default: "4", help: "shortest clip before the resolution drops (L_min)" },
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
            "f2c" => Sampler::F2c {
                candidates: p.int_at_least("candidates", 1)?,
                anchors: p.int_at_least("anchors", 1)?,
                budget: p.int_at_least("budget", 1)?,
                min_clip: p.int_at_least("min_clip", 1)?,
            },
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
            Sampler::F2c { .. } => "f2c",
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
            Sampler::F2c { .. } => {
                return Err(SampleError::Param {
                    sampler: "f2c",
                    reason: "ranks frames by their relevance to the question, so it needs an image-text scorer \
                             (--relevance clip:MODEL or siglip:MODEL)"
                        .into(),
                }
                .into())
            }
        })
    }

    /// F2C's planner on `ladder` for an `f2c` spec (no smoothing, as the spec has no such parameter); `None` for the
    /// other samplers.
    pub fn f2c_planner(&self, ladder: &[Rung]) -> Option<F2c> {
        let Sampler::F2c { anchors, budget, min_clip, .. } = *self else { return None };
        Some(F2c { budget, anchors, min_clip, smooth: 1, ladder: ladder.to_vec() })
    }

    /// Whether picking needs the question and a [`FrameScorer`] ([`Sampler::pick_scored`]).
    pub fn needs_question(&self) -> bool {
        matches!(self, Sampler::F2c { .. })
    }

    /// [`Sampler::pick`] for samplers that rank frames by the question: F2C scores its `candidates` uniform frames
    /// (decoded at the video's size, [`EMBED_BATCH`] at a time) with `scorer` against `query` and plans its clips on
    /// `ladder` (the resolutions the model can take and what a frame costs at each: one rung for a model whose
    /// processor fixes the size). The note names the scorer and the query and lists every candidate's score beside
    /// the anchors, the clip length and the resolution. Other samplers ignore the question.
    pub fn pick_scored(
        &self,
        path: &Path,
        info: &VideoInfo,
        scorer: &dyn FrameScorer,
        query: &str,
        ladder: &[Rung],
    ) -> Result<(Vec<usize>, Option<Value>), SamplerError> {
        let (&Sampler::F2c { candidates, .. }, Some(planner)) = (self, self.f2c_planner(ladder)) else {
            return self.pick(path, info);
        };
        let candidates = uniform_indices(info.frames, candidates, Uniform::Inclusive)?;
        let times: Vec<f64> = candidates.iter().map(|&i| i as f64 / info.fps).collect();
        let (w, h) = if info.rotation % 180 == 90 { (info.height, info.width) } else { (info.width, info.height) };
        let mut relevance = Vec::with_capacity(candidates.len());
        for chunk in times.chunks(EMBED_BATCH) {
            relevance.extend(scorer.scores(&decode_at(path, chunk, w, h)?.frames, query)?);
        }
        let (picked, mut note) = f2c_pick(&planner, &candidates, &relevance)?;
        note["relevance"] = json!(scorer.name());
        note["query"] = json!(query);
        Ok((picked, Some(note)))
    }
}

/// F2C's frames among `candidates` (frame indices) with one `relevance` each, and the note: anchors (as frame
/// indices), clip length, resolution, tokens and every candidate's score.
pub fn f2c_pick(planner: &F2c, candidates: &[usize], relevance: &[f32]) -> Result<(Vec<usize>, Value), SampleError> {
    if relevance.len() != candidates.len() {
        return Err(SampleError::Length {
            sampler: "f2c",
            what: "relevance",
            got: relevance.len(),
            expected: candidates.len(),
        });
    }
    let plan = planner.plan(relevance)?;
    let note = json!({"resolution": plan.rung.side, "clip_len": plan.clip_len, "tokens": plan.tokens,
        "anchors": plan.anchors.iter().map(|&a| candidates[a]).collect::<Vec<_>>(),
        "scores": candidates.iter().zip(relevance).map(|(&i, &r)| json!({"index": i, "score": r})).collect::<Vec<_>>()});
    Ok((plan.frames.into_iter().map(|i| candidates[i]).collect(), note))
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
        assert!(Sampler::from_spec("f3c").unwrap_err().to_string().contains("known: uniform"));
        assert_eq!(
            Sampler::from_spec("f2c:anchors=2").unwrap(),
            Sampler::F2c { candidates: 64, anchors: 2, budget: 6272, min_clip: 4 }
        );
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
