//! The DriveLM-nuScenes challenge: the test file, the prediction file, and the official score (EVAL.md §1.1, §4.1).
//!
//! Each QA carries tags choosing its metrics: 0 accuracy (raw string equality), 1 judge score, 2 language (COCO
//! caption metrics, one reference), 3 match (coordinate F1, averaged with the judge score). Per key frame the first
//! QA (the "important objects" question) is always scored and its matched ground-truth points form the frame's
//! graph; a later QA is scored only if every coordinate pair in its question is in that graph (graph gating: a
//! missed object removes its downstream questions from every average).
//!
//! ```text
//! match F1: points = consecutive pairs of the \d+\.\d+ numbers; each predicted point takes the nearest remaining
//!           GT point by L1, a TP below 16 px; P = TP/(TP+FP+1e-8), R = TP/(TP+FN+1e-8), F1 = 2PR/(P+R+1e-8)
//! match    = (mean(F1·100) + mean judge score on the same items) / 2
//! language = (B1+B2+B3+B4)/4/3 + ROUGE_L/3 + CIDEr/10/3
//! final    = 0.4·judge/100 + 0.2·language + 0.2·match/100 + 0.2·accuracy
//! ```
//!
//! Choices where the reference code would crash \[project\]: a QA without a prediction is scored with an empty
//! answer and counted in `missing_predictions`; an odd count of numbers drops the last one; without a judge the
//! judge, match and final scores are reported as not scored (never as 0), while the accuracy, language and the
//! pure coordinate F1 are.
//!
//! Official code: OpenDriveLab/DriveLM `challenge/evaluation.py`: `evaluation_suit.match_result` (the match F1),
//! `set_graph` / `eval_graph` (gating), `forward` (tags), `eval_acc`, `eval_match` and the `__main__` weighting;
//! its language part is bckim92/language-evaluation `CocoEvaluator(coco_types=["BLEU", "ROUGE_L", "CIDEr"])`, whose
//! PTB tokenizer and scorers are pycocoevalcap's ([`super::caption`]). `match_points` equals a transcription of
//! `match_result` on 400 seeded pairs (`tests/caption_metrics.rs`). Further deviations: `CocoEvaluator` replaces
//! `_UNK` by `_UNKNOWN` in the references before tokenising, which is not done here (DriveLM answers do not contain
//! `_UNK`, and the EM-VLM4AD protocol scored by the same code does not replace it); Python's `\d` also matches
//! non-ASCII decimal digits, [`match_points`] reads ASCII digits only.

use super::caption::{score, CaptionItem};
use super::error::EvalError;
use super::judge::Judge;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One question of the test file.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveQa {
    /// `<scene>_<frame>_<index>`, the index counting perception, prediction, planning and behaviour in order.
    pub id: String,
    /// The question.
    pub question: String,
    /// The reference answer.
    pub answer: String,
    /// Metric tags (0..=3).
    pub tags: Vec<u8>,
}

/// One key frame's questions, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFrame {
    /// Scene token.
    pub scene: String,
    /// Key-frame token.
    pub frame: String,
    /// Camera name -> image path as written in the file (relative to the dataset root).
    pub images: BTreeMap<String, String>,
    /// The questions.
    pub questions: Vec<DriveQa>,
}

const STAGES: [&str; 4] = ["perception", "prediction", "planning", "behavior"];

/// Reads a DriveLM-nuScenes file (`test_eval.json`, or a training file, whose QAs then have no tags) or, when the
/// file is a list, EM-VLM4AD's split format (see [`load_em_vlm4ad`]). Folders of CARLA frames: [`load_path`].
pub fn load(json: &Value) -> Result<Vec<KeyFrame>, String> {
    if json.is_array() {
        return load_em_vlm4ad(json);
    }
    let scenes = json.as_object().ok_or("the DriveLM file must be an object of scenes, or EM-VLM4AD's list")?;
    let mut frames = Vec::new();
    for (scene, body) in scenes {
        let key_frames = body["key_frames"].as_object().ok_or_else(|| format!("scene {scene}: no key_frames"))?;
        for (frame, data) in key_frames {
            frames.push(key_frame(scene, frame, data)?);
        }
    }
    Ok(frames)
}

/// One key frame's body (`QA` by stage, `image_paths`); cameras whose path is null (CARLA) are left out.
fn key_frame(scene: &str, frame: &str, data: &Value) -> Result<KeyFrame, String> {
    let mut questions = Vec::new();
    for stage in STAGES {
        for qa in data["QA"][stage].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let tags = qa["tag"]
                .as_array()
                .map(|t| t.iter().filter_map(|v| v.as_u64()).map(|v| v as u8).collect())
                .unwrap_or_default();
            let text =
                |k: &str| qa[k].as_str().map(str::to_string).ok_or_else(|| format!("{scene}/{frame}: a QA has no {k}"));
            questions.push(DriveQa {
                id: format!("{scene}_{frame}_{}", questions.len()),
                question: text("Q")?,
                answer: text("A")?,
                tags,
            });
        }
    }
    let images = data["image_paths"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|p| (k.clone(), p.to_string()))).collect())
        .unwrap_or_default();
    Ok(KeyFrame { scene: scene.to_string(), frame: frame.to_string(), images, questions })
}

/// Reads a DriveLM file ([`load`]) or, for a folder, DriveLM-CARLA's one JSON per frame
/// (`<town>/<scenario>/<route>/<image_number>.json`, found recursively and read in sorted path order): the scene is
/// the file's folder relative to the given one, the frame its stem.
pub fn load_path(path: &Path) -> Result<Vec<KeyFrame>, EvalError> {
    let read = |p: &Path| -> Result<Value, EvalError> {
        let text = std::fs::read_to_string(p).map_err(|e| EvalError::io(p, e))?;
        serde_json::from_str(&text).map_err(|e| EvalError::format(p.display(), e))
    };
    if !path.is_dir() {
        return load(&read(path)?).map_err(|e| EvalError::format(path.display(), e));
    }
    let mut files = Vec::new();
    let mut folders = vec![path.to_path_buf()];
    // Linked folders are followed (datasets are often assembled from links) but each real folder is read once, so a
    // link cycle cannot loop.
    let mut seen = std::collections::HashSet::new();
    while let Some(folder) = folders.pop() {
        if !seen.insert(std::fs::canonicalize(&folder).unwrap_or_else(|_| folder.clone())) {
            continue;
        }
        for entry in std::fs::read_dir(&folder).map_err(|e| EvalError::io(&folder, e))? {
            let entry = entry.map_err(|e| EvalError::io(&folder, e))?.path();
            if entry.is_dir() {
                folders.push(entry);
            } else if entry.extension().is_some_and(|e| e == "json") {
                files.push(entry);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(EvalError::format(path.display(), "no .json frame files (DriveLM-CARLA layout)"));
    }
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(path).unwrap_or(f);
            let scene = rel.parent().map(|p| p.to_string_lossy().replace('/', "_")).unwrap_or_default();
            let frame = f.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            key_frame(&scene, &frame, &read(f)?).map_err(|e| EvalError::format(f.display(), e))
        })
        .collect()
}

/// Reads EM-VLM4AD's split files (`multi_frame_{train,val,test}.json`): a list of `[{"Q", "A"}, {camera: path}]`
/// pairs. EM-VLM4AD scores every answer with the COCO language metrics, so each QA becomes its own key frame (no
/// graph gating between unrelated questions) tagged 2 (language); ids are `em_vlm4ad_<index>_0`.
pub fn load_em_vlm4ad(json: &Value) -> Result<Vec<KeyFrame>, String> {
    let list = json.as_array().ok_or("EM-VLM4AD files are a list of [QA, images] pairs")?;
    list.iter()
        .enumerate()
        .map(|(i, pair)| {
            let (qa, images) = match pair.as_array().map(Vec::as_slice) {
                Some([qa, images]) => (qa, images),
                _ => return Err(format!("entry {i}: expected [{{\"Q\", \"A\"}}, {{camera: path}}]")),
            };
            let text = |k: &str| qa[k].as_str().map(str::to_string).ok_or_else(|| format!("entry {i}: no {k}"));
            let images = images
                .as_object()
                .ok_or_else(|| format!("entry {i}: the images are not an object of camera -> path"))?
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|p| (k.clone(), p.to_string())))
                .collect();
            Ok(KeyFrame {
                scene: "em_vlm4ad".into(),
                frame: i.to_string(),
                images,
                questions: vec![DriveQa {
                    id: format!("em_vlm4ad_{i}_0"),
                    question: text("Q")?,
                    answer: text("A")?,
                    tags: vec![2],
                }],
            })
        })
        .collect()
}

/// Reads the challenge's prediction file: a list of `{"id", "question", "answer"}` (or the submission wrapper with a
/// `results` list).
pub fn load_predictions(json: &Value) -> Result<HashMap<String, String>, String> {
    let list = json.get("results").unwrap_or(json).as_array().ok_or("predictions must be a list of {id, answer}")?;
    list.iter()
        .map(|p| {
            let id = p["id"].as_str().ok_or("a prediction has no id")?;
            let answer = p["answer"].as_str().ok_or_else(|| format!("prediction {id} has no answer"))?;
            Ok((id.to_string(), answer.to_string()))
        })
        .collect()
}

fn points(text: &str) -> Vec<(f64, f64)> {
    let mut nums = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if let Ok(v) = text[start..i].parse() {
                    nums.push(v);
                }
            }
        } else {
            i += 1;
        }
    }
    nums.chunks_exact(2).map(|c| (c[0], c[1])).collect()
}

/// Greedy coordinate matching: the matched ground-truth points and the F1.
pub fn match_points(answer: &str, truth: &str) -> (Vec<(f64, f64)>, f64) {
    let predicted = points(answer);
    let mut remaining = points(truth);
    let total = remaining.len() as f64;
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut matched = Vec::new();
    for p in predicted {
        let best = remaining
            .iter()
            .enumerate()
            .map(|(i, g)| (i, (p.0 - g.0).abs() + (p.1 - g.1).abs()))
            .fold(None, |b: Option<(usize, f64)>, c| if b.is_none_or(|b| c.1 < b.1) { Some(c) } else { b });
        match best {
            Some((i, d)) if d < 16.0 => {
                tp += 1.0;
                matched.push(remaining.remove(i));
            }
            _ => fp += 1.0,
        }
    }
    let fn_ = total - tp;
    let precision = tp / (tp + fp + 1e-8);
    let recall = tp / (tp + fn_ + 1e-8);
    (matched, 2.0 * precision * recall / (precision + recall + 1e-8))
}

/// The challenge's judge prompt for one answer.
pub fn judge_prompt(answer: &str, truth: &str) -> String {
    format!(
        "Rate my answer based on the correct answer out of 100, with higher scores indicating that the answer is \
         closer to the correct answer, and you should be accurate to single digits like 62, 78, 41,etc. Output the \
         number only. This is the correct answer: {truth}This is my answer: {answer}"
    )
}

/// The challenge scores; judge-dependent parts are `None` without a judge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriveLmScores {
    /// Tag-0 accuracy in [0, 1].
    pub accuracy: Option<f64>,
    /// Mean judge score (tag 1), 0..100.
    pub chatgpt: Option<f64>,
    /// Bleu_1..4, ROUGE_L, CIDEr of the tag-2 items.
    pub language: BTreeMap<String, f64>,
    /// Mean coordinate F1 x 100 of the tag-3 items.
    pub match_f1: Option<f64>,
    /// `(match_f1 + judge on the tag-3 items) / 2`.
    #[serde(rename = "match")]
    pub match_score: Option<f64>,
    /// The weighted challenge score.
    #[serde(rename = "final")]
    pub final_score: Option<f64>,
    /// Questions scored / skipped by graph gating / without a prediction.
    pub scored: usize,
    /// Questions removed by graph gating.
    pub gated_out: usize,
    /// Questions with no prediction (scored as empty answers).
    pub missing_predictions: usize,
    /// Parts that could not be scored, and why.
    pub not_scored: Vec<String>,
}

/// Scores predictions against the test file's key frames.
pub fn evaluate(
    frames: &[KeyFrame],
    predictions: &HashMap<String, String>,
    judge: Option<&dyn Judge>,
) -> DriveLmScores {
    let (mut accuracy, mut gpt, mut f1, mut match_gpt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut language = Vec::new();
    let (mut scored, mut gated_out, mut missing) = (0, 0, 0);
    let mut judge_errors = Vec::new();
    let mut ask = |answer: &str, truth: &str, into: &mut Vec<f64>| {
        if let Some(j) = judge {
            match j.score(&judge_prompt(answer, truth)) {
                Ok(s) => into.push(s),
                Err(e) => judge_errors.push(e),
            }
        }
    };
    for frame in frames {
        let mut graph: Vec<(f64, f64)> = Vec::new();
        for (k, qa) in frame.questions.iter().enumerate() {
            if k > 0 && !points(&qa.question).iter().all(|q| graph.contains(q)) {
                gated_out += 1;
                continue;
            }
            let answer = predictions.get(&qa.id).cloned().unwrap_or_else(|| {
                missing += 1;
                String::new()
            });
            if k == 0 {
                graph = match_points(&answer, &qa.answer).0;
            }
            scored += 1;
            if qa.tags.contains(&0) {
                accuracy.push(if answer == qa.answer { 1.0 } else { 0.0 });
            }
            if qa.tags.contains(&1) {
                ask(&answer, &qa.answer, &mut gpt);
            }
            if qa.tags.contains(&2) {
                language.push(CaptionItem {
                    id: qa.id.clone(),
                    prediction: answer.clone(),
                    references: vec![qa.answer.clone()],
                });
            }
            if qa.tags.contains(&3) {
                f1.push(match_points(&answer, &qa.answer).1 * 100.0);
                ask(&answer, &qa.answer, &mut match_gpt);
            }
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let mut not_scored = Vec::new();
    if judge.is_none() {
        not_scored.push("judge score (tags 1 and 3): no --judge command given".to_string());
    }
    if !judge_errors.is_empty() {
        not_scored.push(format!("{} judge calls failed; first: {}", judge_errors.len(), judge_errors[0]));
    }
    let judged = judge.is_some() && judge_errors.is_empty();
    let chatgpt = if judged { mean(&gpt) } else { None };
    let match_f1 = mean(&f1);
    let match_score = match (match_f1, judged.then(|| mean(&match_gpt)).flatten()) {
        (Some(f), Some(g)) => Some((f + g) / 2.0),
        _ => None,
    };
    let language_scores = if language.is_empty() { BTreeMap::new() } else { score(&language).metrics };
    let accuracy = mean(&accuracy);
    let language_value = (!language_scores.is_empty()).then(|| {
        let b: f64 = (1..=4).map(|n| language_scores[&format!("Bleu_{n}")]).sum();
        b / 4.0 / 3.0 + language_scores["ROUGE_L"] / 3.0 + language_scores["CIDEr"] / 10.0 / 3.0
    });
    for (part, empty) in
        [("accuracy", accuracy.is_none()), ("language", language_value.is_none()), ("match", match_f1.is_none())]
    {
        if empty {
            not_scored.push(format!("{part}: no question with its tag was scored"));
        }
    }
    if judge.is_some() && gpt.is_empty() {
        not_scored.push("judge score: no tag-1 question was scored".to_string());
    }
    let final_score = match (chatgpt, language_value, match_score, accuracy) {
        (Some(c), Some(l), Some(m), Some(a)) => Some(0.4 * c / 100.0 + 0.2 * l + 0.2 * m / 100.0 + 0.2 * a),
        _ => None,
    };
    DriveLmScores {
        accuracy,
        chatgpt,
        language: language_scores,
        match_f1,
        match_score,
        final_score,
        scored,
        gated_out,
        missing_predictions: missing,
        not_scored,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn carla_folders_give_one_front_camera_frame_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let route = dir.path().join("Town12/Accident/route7");
        std::fs::create_dir_all(&route).unwrap();
        let frame = |q: &str| {
            serde_json::json!({"QA": {"perception": [{"Q": q, "A": "Yes.", "con_up": [], "con_down": [], "cluster": 0, "layer": 0}],
                "prediction": [], "planning": [], "behavior": []},
                "image_paths": {"CAM_FRONT": "images/0001.jpg", "CAM_BACK": null}})
        };
        std::fs::write(route.join("0002.json"), frame("Second?").to_string()).unwrap();
        std::fs::write(route.join("0001.json"), frame("First?").to_string()).unwrap();
        std::fs::write(route.join("notes.txt"), "not a frame").unwrap();
        let frames = load_path(dir.path()).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].questions[0].question, "First?");
        assert_eq!(frames[0].questions[0].id, "Town12_Accident_route7_0001_0");
        assert_eq!(frames[0].images.keys().collect::<Vec<_>>(), ["CAM_FRONT"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(load_path(empty.path()).unwrap_err().to_string().contains("no .json"));
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path(), route.join("loop")).unwrap();
        assert_eq!(load_path(dir.path()).unwrap().len(), 2, "a link back up is read once");
        std::fs::write(route.join("0003.json"), "{").unwrap();
        assert!(load_path(dir.path()).unwrap_err().to_string().contains("0003.json"));
    }

    #[test]
    fn em_vlm4ad_pairs_become_single_question_frames_scored_by_language() {
        let json = serde_json::json!([
            [{"Q": "What is ahead?", "A": "A red car."}, {"CAM_FRONT": "data/CAM_FRONT/a.jpg", "CAM_BACK": "b.jpg"}],
            [{"Q": "Is it safe to turn?", "A": "No, a truck is coming."}, {"CAM_FRONT": "data/CAM_FRONT/c.jpg"}]
        ]);
        let frames = load(&json).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].images.len(), 2);
        assert_eq!(frames[1].questions[0].id, "em_vlm4ad_1_0");
        // The second question mentions no object, yet is scored: no gating across EM-VLM4AD entries.
        let preds: HashMap<String, String> =
            [("em_vlm4ad_0_0", "A red car."), ("em_vlm4ad_1_0", "No, a truck is coming.")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let s = evaluate(&frames, &preds, None);
        assert_eq!((s.scored, s.gated_out), (2, 0));
        assert!((s.language["ROUGE_L"] - 1.0).abs() < 1e-9, "{:?}", s.language);
        assert!(s.accuracy.is_none());
        let bad = serde_json::json!([[{"Q": "q"}, {}]]);
        assert!(load(&bad).unwrap_err().contains("entry 0"));
        assert!(load(&serde_json::json!([["only one"]])).unwrap_err().contains("entry 0"));
    }
    use super::*;

    struct Fixed(f64);

    impl Judge for Fixed {
        fn score(&self, _: &str) -> Result<f64, String> {
            Ok(self.0)
        }
    }

    /// A synthetic frame in the test_eval schema: objects 1 and 2; question 3 asks about object 2.
    fn test_file() -> Value {
        serde_json::json!({"scene1": {"key_frames": {"frame1": {
            "QA": {
                "perception": [
                    {"Q": "What are the important objects?", "A": "A car <c1,CAM_FRONT,100.0,200.0> and a bus <c2,CAM_BACK,500.5,300.0>.", "tag": [2]},
                    {"Q": "What is the status of <c1,CAM_FRONT,100.0,200.0>? A. Moving. B. Stopped.", "A": "A", "tag": [0]}
                ],
                "prediction": [{"Q": "What should be noticed first?", "A": "Firstly notice <c1,CAM_FRONT,100.0,200.0>.", "tag": [3]}],
                "planning": [{"Q": "What to do about <c2,CAM_BACK,500.5,300.0>?", "A": "Slow down.", "tag": [1]}],
                "behavior": [{"Q": "Predict the behavior. A. Go. B. Stop.", "A": "B", "tag": [0]}]
            },
            "image_paths": {"CAM_FRONT": "../nuscenes/samples/CAM_FRONT/x.jpg"}
        }}}})
    }

    #[test]
    fn match_follows_the_greedy_l1_rule() {
        let (matched, f1) =
            match_points("<c1,CAM,105.0,201.0> and 900.0,900.0", "<c1,CAM,100.0,200.0> <c2,CAM,500.5,300.0>");
        assert_eq!(matched, vec![(100.0, 200.0)]);
        // TP 1, FP 1, FN 1: P = R = 0.5.
        assert!((f1 - 0.5).abs() < 1e-6);
        assert_eq!(match_points("no numbers", "1.0,2.0").1, 0.0);
    }

    #[test]
    fn graph_gating_skips_questions_about_missed_objects() {
        let frames = load(&test_file()).unwrap();
        assert_eq!(frames[0].questions.len(), 5);
        assert_eq!(frames[0].questions[2].id, "scene1_frame1_2");
        // The prediction finds object 1 but not object 2: the planning question about object 2 is gated out.
        let preds: HashMap<String, String> = [
            ("scene1_frame1_0", "A car <c1,CAM_FRONT,101.0,199.0>."),
            ("scene1_frame1_1", "A"),
            ("scene1_frame1_2", "Firstly notice <c1,CAM_FRONT,100.0,200.0>."),
            ("scene1_frame1_3", "Slow down."),
            ("scene1_frame1_4", "A"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = evaluate(&frames, &preds, Some(&Fixed(80.0)));
        assert_eq!((s.scored, s.gated_out, s.missing_predictions), (4, 1, 0));
        assert_eq!(s.accuracy, Some(0.5));
        assert!((s.match_f1.unwrap() - 100.0).abs() < 1e-4);
        assert!((s.match_score.unwrap() - 90.0).abs() < 1e-4);
        // The only tag-1 question was gated out, so there is no judge score and no final score.
        assert_eq!(s.chatgpt, None);
        assert_eq!(s.final_score, None);
    }

    #[test]
    fn perfect_answers_score_the_maximum_and_no_judge_means_not_scored() {
        let frames = load(&test_file()).unwrap();
        let preds: HashMap<String, String> =
            frames[0].questions.iter().map(|q| (q.id.clone(), q.answer.clone())).collect();
        let s = evaluate(&frames, &preds, Some(&Fixed(100.0)));
        assert_eq!((s.accuracy, s.chatgpt, s.gated_out), (Some(1.0), Some(100.0), 0));
        assert!((s.match_score.unwrap() - 100.0).abs() < 1e-4);
        assert!(s.final_score.is_some());
        let unjudged = evaluate(&frames, &preds, None);
        assert_eq!((unjudged.chatgpt, unjudged.match_score, unjudged.final_score), (None, None, None));
        assert!(unjudged.match_f1.is_some() && unjudged.not_scored[0].contains("no --judge"));
        // Nothing answered: the object questions are gated out; the first QA and the two without coordinates count.
        let none = evaluate(&frames, &HashMap::new(), None);
        assert_eq!((none.missing_predictions, none.gated_out), (3, 2));
    }
}
