//! NuScenes-QA accuracy by question type and hop count (EVAL.md §1.4, §4.2).
//!
//! The official scorer compares `str(gt) == pred` with `pred` from the closed 30-answer vocabulary and reports
//! `Overall`, each `template_type` and each `template_type_num_hop` as `correct / total`. A generative model needs a
//! mapping into that vocabulary; none is official, so the normaliser is named and versioned: `nuscenesqa_v1`
//! lower-cases, strips punctuation and surrounding whitespace, maps `zero`..`ten` to digits, and accepts the result
//! only if it is a vocabulary word (anything else counts as wrong).
//!
//! Questions name a nuScenes key frame by `sample_token`; its six camera images are found through the nuScenes
//! metadata (`v1.0-*/sample_data.json` under the data root), read memory-mapped and streamed, keeping only the key
//! frames asked about (the trainval file is over a gigabyte).

use super::error::EvalError;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The closed answer vocabulary.
pub const VOCABULARY: [&str; 30] = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "no",
    "yes",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction vehicle",
    "motorcycle",
    "moving",
    "not standing",
    "parked",
    "pedestrian",
    "standing",
    "stopped",
    "traffic cone",
    "trailer",
    "truck",
    "with rider",
    "without rider",
];

/// Name of the normaliser, recorded with every result.
pub const NORMALISER: &str = "nuscenesqa_v1";

/// One question.
#[derive(Debug, Clone, PartialEq)]
pub struct NuScenesQuestion {
    /// nuScenes key-frame token.
    pub sample_token: String,
    /// The question.
    pub question: String,
    /// The vocabulary answer.
    pub answer: String,
    /// 0 or 1.
    pub num_hop: u64,
    /// exist, count, object, status or comparison.
    pub template_type: String,
}

/// Reads `NuScenes_{train,val}_questions.json` (`{"questions": [...]}`).
pub fn load(json: &Value) -> Result<Vec<NuScenesQuestion>, String> {
    let list = json["questions"].as_array().ok_or("expected {\"questions\": [...]}")?;
    list.iter()
        .enumerate()
        .map(|(i, q)| {
            let s = |k: &str| q[k].as_str().map(str::to_string).ok_or_else(|| format!("question {i}: no {k}"));
            let answer = match &q["answer"] {
                Value::String(a) => a.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(format!("question {i}: no answer")),
            };
            Ok(NuScenesQuestion {
                sample_token: s("sample_token")?,
                question: s("question")?,
                answer,
                num_hop: q["num_hop"].as_u64().ok_or_else(|| format!("question {i}: no num_hop"))?,
                template_type: s("template_type")?,
            })
        })
        .collect()
}

/// Camera image paths (relative to the nuScenes root) per key frame: `sample_token -> channel -> samples/CAM_.../x.jpg`.
pub type KeyFrameCameras = HashMap<String, BTreeMap<String, String>>;

#[derive(Deserialize)]
struct SampleData<'a> {
    #[serde(borrow)]
    sample_token: Cow<'a, str>,
    #[serde(borrow)]
    filename: Cow<'a, str>,
    #[serde(default)]
    is_key_frame: bool,
}

struct KeepWanted<'w> {
    wanted: &'w HashSet<String>,
    out: &'w mut KeyFrameCameras,
}

impl<'de> Visitor<'de> for KeepWanted<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of sample_data records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(d) = seq.next_element::<SampleData<'de>>()? {
            // Key-frame camera images live under samples/CAM_*/ (sweeps/ holds the in-between frames).
            let Some(rest) = d.filename.strip_prefix("samples/") else { continue };
            let Some(channel) = rest.split('/').next().filter(|c| c.starts_with("CAM_")) else { continue };
            if d.is_key_frame && self.wanted.contains(d.sample_token.as_ref()) {
                self.out
                    .entry(d.sample_token.to_string())
                    .or_default()
                    .insert(channel.to_string(), d.filename.to_string());
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for KeepWanted<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// The `v1.0-*/sample_data.json` files under a nuScenes root (trainval, mini, test: whichever are there).
pub fn metadata_files(root: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| EvalError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("v1.0-")))
        .map(|p| p.join("sample_data.json"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EvalError::format(
            root.display(),
            "no v1.0-*/sample_data.json here: give the nuScenes root (with samples/ and the metadata) as --data-root",
        ));
    }
    Ok(files)
}

/// The camera images of every key frame in `wanted`, from the metadata under `root`.
pub fn key_frame_cameras(root: &Path, wanted: &HashSet<String>) -> Result<KeyFrameCameras, EvalError> {
    let mut out = KeyFrameCameras::new();
    for file in metadata_files(root)? {
        let f = std::fs::File::open(&file).map_err(|e| EvalError::io(&file, e))?;
        // SAFETY: the mapping is read-only and dropped before returning; a file truncated by another process
        // while mapped would fault, which is the accepted risk of memory-mapped reading.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| EvalError::io(&file, e))?;
        let mut de = serde_json::Deserializer::from_slice(&map);
        KeepWanted { wanted, out: &mut out }.deserialize(&mut de).map_err(|e| EvalError::format(file.display(), e))?;
    }
    Ok(out)
}

/// Maps a free-form reply into the vocabulary (`nuscenesqa_v1`), or `None`.
pub fn normalise(reply: &str) -> Option<&'static str> {
    let cleaned: String = reply.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let numbers = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
    let joined = words
        .iter()
        .map(|w| numbers.iter().position(|n| n == w).map_or(w.to_string(), |i| i.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    VOCABULARY.iter().copied().find(|v| *v == joined)
}

/// `correct / total` of one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    /// Correct answers.
    pub correct: usize,
    /// Questions.
    pub total: usize,
    /// `correct / total` (0 for an empty group).
    pub value: f64,
}

/// Accuracy overall, per template type and per `type_hop`, for predictions aligned with `questions`.
pub fn evaluate(questions: &[NuScenesQuestion], predictions: &[String]) -> BTreeMap<String, Accuracy> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (q, p) in questions.iter().zip(predictions) {
        let correct = usize::from(normalise(p) == Some(q.answer.as_str()));
        for key in ["Overall".to_string(), q.template_type.clone(), format!("{}_{}", q.template_type, q.num_hop)] {
            let e = counts.entry(key).or_insert((0, 0));
            e.0 += correct;
            e.1 += 1;
        }
    }
    counts
        .into_iter()
        .map(|(k, (c, t))| {
            (k, Accuracy { correct: c, total: t, value: if t == 0 { 0.0 } else { c as f64 / t as f64 } })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normaliser_maps_replies_into_the_vocabulary() {
        assert_eq!(normalise("Yes."), Some("yes"));
        assert_eq!(normalise("  Two "), Some("2"));
        assert_eq!(normalise("Construction vehicle!"), Some("construction vehicle"));
        assert_eq!(normalise("There are two cars."), None);
        assert_eq!(normalise(""), None);
    }

    #[test]
    fn accuracy_by_type_and_hop() {
        let data = serde_json::json!({"questions": [
            {"sample_token": "t1", "question": "Are there cars?", "answer": "yes", "num_hop": 0, "template_type": "exist"},
            {"sample_token": "t1", "question": "How many trucks?", "answer": "2", "num_hop": 1, "template_type": "count"},
            {"sample_token": "t2", "question": "How many buses?", "answer": "0", "num_hop": 0, "template_type": "count"}
        ]});
        let qs = load(&data).unwrap();
        let r = evaluate(&qs, &["Yes".into(), "two".into(), "one".into()]);
        assert_eq!(r["Overall"], Accuracy { correct: 2, total: 3, value: 2.0 / 3.0 });
        assert_eq!(r["count"].correct, 1);
        assert_eq!(r["count_1"].value, 1.0);
        assert_eq!(r["count_0"].value, 0.0);
        assert!(load(&serde_json::json!({"questions": [{"question": "?"}]})).is_err());
    }
}

#[cfg(test)]
mod camera_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_frame_cameras_come_from_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("v1.0-mini")).unwrap();
        let records = json!([
            {"token": "a", "sample_token": "s1", "filename": "samples/CAM_FRONT/f1.jpg", "is_key_frame": true},
            {"token": "b", "sample_token": "s1", "filename": "samples/CAM_BACK/b1.jpg", "is_key_frame": true},
            {"token": "c", "sample_token": "s1", "filename": "sweeps/CAM_FRONT/f1b.jpg", "is_key_frame": false},
            {"token": "d", "sample_token": "s1", "filename": "samples/LIDAR_TOP/l.pcd.bin", "is_key_frame": true},
            {"token": "e", "sample_token": "s2", "filename": "samples/CAM_FRONT/f2.jpg", "is_key_frame": true},
        ]);
        std::fs::write(dir.path().join("v1.0-mini/sample_data.json"), records.to_string()).unwrap();
        let wanted: HashSet<String> = ["s1".to_string()].into();
        let cams = key_frame_cameras(dir.path(), &wanted).unwrap();
        assert_eq!(cams.len(), 1, "only the key frames asked about");
        assert_eq!(cams["s1"].keys().collect::<Vec<_>>(), ["CAM_BACK", "CAM_FRONT"]);
        assert!(key_frame_cameras(&dir.path().join("v1.0-mini"), &wanted)
            .unwrap_err()
            .to_string()
            .contains("--data-root"));
        std::fs::write(dir.path().join("v1.0-mini/sample_data.json"), "[{\"sample_token\": 1}]").unwrap();
        assert!(matches!(key_frame_cameras(dir.path(), &wanted), Err(EvalError::Format { .. })));
    }
}
