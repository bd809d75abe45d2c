//! The benchmarks `tokensieve eval` runs, behind one interface: load the published file, turn each question into a
//! [`Sample`] (prompt + the images or video it is about), and score the answered sample lines.
//!
//! | task | unit | media | prompt | scored with |
//! |---|---|---|---|---|
//! | `drivelm` | QA of a key frame | 6 cameras | the question | DriveLM challenge score (judge parts need `--judge`) |
//! | `em-vlm4ad` | QA pair of EM-VLM4AD's split | its cameras | `Question: {Q} Answer:` | COCO BLEU/ROUGE-L/CIDEr as its `eval.py`: duplicate (images, question) pairs once, answers over `--max-len` characters dropped |
//! | `nuscenes-qa` | question | the key frame's 6 cameras (nuScenes metadata) | question + short-answer instruction | accuracy by type and hop (`nuscenesqa_v1`) |
//! | `lingoqa` | question about a clip | the clip's frames | the question | Lingo-Judge (`--judge`) + COCO metrics vs both references |
//! | `videomme`, `mlvu`, `longvideobench`, `egoschema`, `nextqa` | question | `--frames` uniform frames of the video | the benchmark's own | named extractor (`--extractor`) |
//!
//! Choices \[project\]: NuScenes-QA gives the question with LLaVA's short-answer instruction (`Answer the question
//! using a single word or phrase.`), as LLaVA-style evaluations of closed-vocabulary VQA do; camera images and
//! frames go to the model in nuScenes camera order or in time order. A sample whose media is missing is run as an
//! error line, not skipped, so the output says what was not answered and why.

use super::drivelm::{self, KeyFrame};
use super::error::EvalError;
use super::judge::{CommandJudge, Judge};
use super::lingoqa::{self, LingoItem};
use super::nuscenes_qa::{self, NuScenesQuestion};
use super::video_mcq::{self, McqItem, VideoBench};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tokensieve_video::NUSCENES_CAMERAS;

/// Every task `eval` runs.
pub const TASKS: [&str; 9] =
    ["drivelm", "em-vlm4ad", "nuscenes-qa", "lingoqa", "videomme", "mlvu", "longvideobench", "egoschema", "nextqa"];

/// What a sample shows the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// Still images (camera views, clip frames), in order.
    Images(Vec<PathBuf>),
    /// A video, sampled uniformly.
    Video(PathBuf),
    /// The media could not be found; the sample becomes an error line.
    Unavailable(String),
}

/// One question to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The dataset's id (unique within the task).
    pub id: String,
    /// Position in the dataset (sharding and output order).
    pub index: usize,
    /// System prompt, where the benchmark has one.
    pub system: Option<String>,
    /// The user turn.
    pub prompt: String,
    /// Images or video.
    pub media: Media,
    /// Fields copied into the sample's output line (question, target, type, ...).
    pub fields: Value,
}

/// How answers are scored (not part of what the model is asked).
#[derive(Debug, Clone)]
pub struct Scoring {
    /// Multiple-choice extractor; `None`: the benchmark's default.
    pub extractor: Option<String>,
    /// Seed of the extractors' random fallbacks.
    pub seed: u64,
    /// Judge command for DriveLM's judge-scored parts and Lingo-Judge.
    pub judge: Option<CommandJudge>,
    /// `em-vlm4ad`: predictions longer than this many characters are dropped before scoring (its `max_len`).
    pub max_len: usize,
}

/// A loaded benchmark.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// DriveLM-nuScenes / EM-VLM4AD split / DriveLM-CARLA, scored by the challenge's rules.
    DriveLm(Vec<KeyFrame>),
    /// EM-VLM4AD's split under its own protocol (one key frame per QA pair, duplicates removed).
    EmVlm4ad(Vec<KeyFrame>),
    /// NuScenes-QA questions.
    NuScenesQa(Vec<NuScenesQuestion>),
    /// LingoQA evaluation questions.
    LingoQa(Vec<LingoItem>),
    /// A multiple-choice video benchmark.
    Video(VideoBench, Vec<McqItem>),
}

const SHORT_ANSWER: &str = "Answer the question using a single word or phrase.";

impl Dataset {
    /// Loads the dataset file (or folder) of `task`.
    pub fn load(task: &str, data: &Path) -> Result<Self, EvalError> {
        Ok(match task {
            "drivelm" => Dataset::DriveLm(drivelm::load_path(data)?),
            "em-vlm4ad" => {
                let text = std::fs::read_to_string(data).map_err(|e| EvalError::io(data, e))?;
                let json: Value = serde_json::from_str(&text).map_err(|e| EvalError::format(data.display(), e))?;
                let frames =
                    drivelm::load_em_vlm4ad(&json).map_err(|reason| EvalError::format(data.display(), reason))?;
                // Its eval.py answers each (images, question) pair once: later duplicates are not scored.
                let mut seen = HashSet::new();
                Dataset::EmVlm4ad(
                    frames
                        .into_iter()
                        .filter(|f| {
                            let images: Vec<&String> = f.images.values().collect();
                            seen.insert(format!("{images:?}|{}", f.questions[0].question))
                        })
                        .collect(),
                )
            }
            "nuscenes-qa" => {
                let text = std::fs::read_to_string(data).map_err(|e| EvalError::io(data, e))?;
                let json: Value = serde_json::from_str(&text).map_err(|e| EvalError::format(data.display(), e))?;
                Dataset::NuScenesQa(
                    nuscenes_qa::load(&json).map_err(|reason| EvalError::format(data.display(), reason))?,
                )
            }
            "lingoqa" => Dataset::LingoQa(lingoqa::load(data)?),
            other => match VideoBench::from_name(other) {
                Some(bench) => Dataset::Video(bench, video_mcq::load(bench, data)?),
                None => {
                    return Err(EvalError::Setting(format!("unknown task `{other}` (known: {})", TASKS.join(", "))))
                }
            },
        })
    }

    /// The task's command-line name.
    pub fn task(&self) -> &'static str {
        match self {
            Dataset::DriveLm(_) => "drivelm",
            Dataset::EmVlm4ad(_) => "em-vlm4ad",
            Dataset::NuScenesQa(_) => "nuscenes-qa",
            Dataset::LingoQa(_) => "lingoqa",
            Dataset::Video(bench, _) => bench.name(),
        }
    }

    /// Every question as a sample, in dataset order; media paths resolved against `root`.
    pub fn samples(&self, root: &Path) -> Result<Vec<Sample>, EvalError> {
        let sample = |index: usize, id: String, prompt: String, media: Media, fields: Value| Sample {
            id,
            index,
            system: None,
            prompt,
            media,
            fields,
        };
        Ok(match self {
            Dataset::DriveLm(frames) | Dataset::EmVlm4ad(frames) => frames
                .iter()
                .flat_map(|f| f.questions.iter().map(move |qa| (f, qa)))
                .enumerate()
                .map(|(index, (frame, qa))| {
                    let images: Vec<PathBuf> = NUSCENES_CAMERAS
                        .iter()
                        .filter_map(|cam| frame.images.get(*cam))
                        .map(|p| root.join(p.trim_start_matches("../")))
                        .collect();
                    let media = if images.is_empty() {
                        Media::Unavailable("the key frame has no camera image".into())
                    } else {
                        Media::Images(images)
                    };
                    let fields = json!({"question": qa.question, "target": qa.answer, "tags": qa.tags});
                    let prompt = match self {
                        Dataset::EmVlm4ad(_) => format!("Question: {} Answer:", qa.question),
                        _ => qa.question.clone(),
                    };
                    sample(index, qa.id.clone(), prompt, media, fields)
                })
                .collect(),
            Dataset::NuScenesQa(questions) => {
                let wanted: HashSet<String> = questions.iter().map(|q| q.sample_token.clone()).collect();
                let cameras = nuscenes_qa::key_frame_cameras(root, &wanted)?;
                questions
                    .iter()
                    .enumerate()
                    .map(|(index, q)| {
                        let media = match cameras.get(&q.sample_token) {
                            Some(c) => Media::Images(
                                NUSCENES_CAMERAS.iter().filter_map(|cam| c.get(*cam)).map(|p| root.join(p)).collect(),
                            ),
                            None => Media::Unavailable(format!(
                                "key frame {} has no camera images in the nuScenes metadata",
                                q.sample_token
                            )),
                        };
                        let fields = json!({"question": q.question, "target": q.answer, "template_type":
                            q.template_type, "num_hop": q.num_hop, "sample_token": q.sample_token});
                        sample(index, index.to_string(), format!("{}\n{SHORT_ANSWER}", q.question), media, fields)
                    })
                    .collect()
            }
            Dataset::LingoQa(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let media = if item.images.is_empty() {
                        Media::Unavailable("the question lists no frames".into())
                    } else {
                        Media::Images(item.images.iter().map(|p| root.join(p)).collect())
                    };
                    let fields = json!({"question": item.question, "target": item.references});
                    sample(index, item.id(), item.question.clone(), media, fields)
                })
                .collect(),
            Dataset::Video(bench, items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let p = video_mcq::prompt(*bench, item);
                    let media = match video_mcq::find_video(*bench, item, root) {
                        Ok(path) => Media::Video(path),
                        Err(e) => Media::Unavailable(e),
                    };
                    let fields = json!({"question": item.question, "options": item.options,
                        "target": video_mcq::answer_text(*bench, item), "video": item.video, "groups": item.groups});
                    Sample { system: p.system, ..sample(index, item.id.clone(), p.user, media, fields) }
                })
                .collect(),
        })
    }

    /// The scorer's description and the scores of the answered lines (`id -> prediction`); `attempted` also holds
    /// the ids that ended in an error.
    pub fn score(
        &self,
        predictions: &HashMap<String, String>,
        attempted: &HashSet<String>,
        scoring: &Scoring,
    ) -> Result<(String, Value), EvalError> {
        let judge = scoring.judge.as_ref().map(|j| j as &dyn Judge);
        Ok(match self {
            Dataset::DriveLm(frames) => {
                // Score only the key frames whose questions were all attempted (a partial run scores what it covers);
                // a failed sample is scored as a missing prediction, as the challenge does.
                let covered: Vec<KeyFrame> =
                    frames.iter().filter(|f| f.questions.iter().all(|q| attempted.contains(&q.id))).cloned().collect();
                let scores = drivelm::evaluate(&covered, predictions, judge);
                let mut v = json!(scores);
                v["key_frames_scored"] = json!(covered.len());
                // DriveLM's accuracy is raw string equality, so no answer extractor is involved.
                ("DriveLM challenge evaluation.py (accuracy: raw equality; match: 16 px greedy L1, F1; COCO language)"
                    .into(), v)
            }
            Dataset::EmVlm4ad(frames) => {
                let (kept, dropped): (HashMap<String, String>, HashMap<String, String>) =
                    predictions.clone().into_iter().partition(|(_, p)| p.chars().count() <= scoring.max_len);
                let covered: Vec<KeyFrame> =
                    frames.iter().filter(|f| f.questions.iter().all(|q| kept.contains_key(&q.id))).cloned().collect();
                let mut v = json!(drivelm::evaluate(&covered, &kept, None));
                v["dropped_long_predictions"] = json!(dropped.len());
                v["max_len"] = json!(scoring.max_len);
                v["not_scored"] = json!(["METEOR (the jar is not called)"]);
                (
                    "EM-VLM4AD eval.py: COCO BLEU/ROUGE-L/CIDEr over answered pairs, duplicates once, answers over \
                     max_len characters dropped"
                        .into(),
                    v,
                )
            }
            Dataset::NuScenesQa(questions) => {
                let (asked, answers): (Vec<NuScenesQuestion>, Vec<String>) = questions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, q)| predictions.get(&i.to_string()).map(|p| (q.clone(), p.clone())))
                    .unzip();
                let accuracy = nuscenes_qa::evaluate(&asked, &answers);
                (
                    format!(
                        "NuScenes-QA result_eval.py exact match after the `{}` normaliser",
                        nuscenes_qa::NORMALISER
                    ),
                    json!({"normaliser": nuscenes_qa::NORMALISER, "accuracy": accuracy}),
                )
            }
            Dataset::LingoQa(items) => (
                "LingoQA: Lingo-Judge through the judge command (max logit over references > 0); COCO metrics".into(),
                json!(lingoqa::evaluate(items, predictions, judge)),
            ),
            Dataset::Video(bench, items) => {
                let extractor = scoring.extractor.clone().unwrap_or_else(|| bench.default_extractor().to_string());
                let scores = video_mcq::evaluate(*bench, items, predictions, &extractor, scoring.seed)?;
                (format!("{} multiple choice, extractor `{extractor}`", bench.name()), json!(scores))
            }
        })
    }

    /// Files the official scorers read, from the answered lines: DriveLM's `output.json`, LingoQA's
    /// `predictions.csv`.
    pub fn submission(&self, lines: &[&Value]) -> Option<(&'static str, String)> {
        let answered = || lines.iter().filter(|l| l["prediction"].is_string());
        match self {
            Dataset::DriveLm(_) | Dataset::EmVlm4ad(_) => {
                let list: Vec<Value> = answered()
                    .map(|l| json!({"id": l["id"], "question": l["question"], "answer": l["prediction"]}))
                    .collect();
                Some(("output.json", serde_json::to_string_pretty(&list).ok()? + "\n"))
            }
            Dataset::LingoQa(items) => {
                let predictions: HashMap<String, String> = answered()
                    .filter_map(|l| Some((l["id"].as_str()?.to_string(), l["prediction"].as_str()?.to_string())))
                    .collect();
                Some(("predictions.csv", lingoqa::predictions_csv(items, &predictions)))
            }
            _ => None,
        }
    }
}
