//! The multiple-choice long-video benchmarks that token-compression papers report (Video-MME, MLVU, LongVideoBench,
//! EgoSchema, NExT-QA): a loader per published file format, the benchmark's own prompt, where its videos lie, and
//! its aggregation (EVAL.md §2). Scoring goes through a named extractor from [`super::mcq`], recorded in the result.
//!
//! | benchmark | files read | id | prompt | default extractor | reported |
//! |---|---|---|---|---|---|
//! | `videomme` | HF `lmms-eval/Video-MME` parquet (or the same rows as JSON) | `question_id` | official, without subtitles | `videomme_official` | micro accuracy; by duration, domain, sub-category, task type |
//! | `mlvu` | official `json/*.json` (a file or the folder) | `<file stem>_<index>` | official (system prompt + `(A) ...`) | `mlvu_official` | M-Avg = macro over question types, and micro |
//! | `longvideobench` | `lvb_val.json` (`candidates`) or the HF rows (`option0..4`) | `id` | lmms-eval | `lmms_eval_v0.4_longvideobench` | micro; by duration group, category |
//! | `egoschema` | HF `lmms-lab/egoschema` rows, or the official `questions.json` (+ `subset_answers.json` beside it) | `question_idx` / `q_uid` | lmms-eval | `lmms_eval_v0.4_egoschema` | accuracy over the questions with answers |
//! | `nextqa` | official `val.csv`/`test.csv` or the HF MC rows | `<video>_<qid>` | lmms-eval | `lmms_eval_v0.4_nextqa` | micro; by type and Acc@C/T/D |
//!
//! Choices \[project\]:
//! - Random fallbacks of an extractor draw from a generator seeded by the run's seed and the sample id, so a sharded
//!   run and a single run score every reply identically.
//! - Questions whose answer is withheld (EgoSchema's full set) are answered and written out, and reported as not
//!   scored, never counted wrong.
//! - Video-MME is run without subtitles (the "w/o subs" column of its leaderboard).

use super::error::EvalError;
use super::mcq::{self, Verdict};
use super::table::{integer, read_rows, text, Row};
use crate::pruners::primitives::SplitMix64;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A multiple-choice video benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoBench {
    /// Video-MME (BradyFU/Video-MME).
    VideoMme,
    /// MLVU (JUNJIE99/MLVU), multiple-choice tasks.
    Mlvu,
    /// LongVideoBench, validation split.
    LongVideoBench,
    /// EgoSchema (full or the 500-question subset).
    EgoSchema,
    /// NExT-QA, multiple choice.
    NextQa,
}

/// Every benchmark with its command-line name.
pub const BENCHES: [(&str, VideoBench); 5] = [
    ("videomme", VideoBench::VideoMme),
    ("mlvu", VideoBench::Mlvu),
    ("longvideobench", VideoBench::LongVideoBench),
    ("egoschema", VideoBench::EgoSchema),
    ("nextqa", VideoBench::NextQa),
];

const LETTER_SUFFIX: &str = "Answer with the option's letter from the given choices directly.";

impl VideoBench {
    /// The benchmark called `name` on the command line.
    pub fn from_name(name: &str) -> Option<Self> {
        BENCHES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        BENCHES.iter().find(|(_, b)| *b == self).map_or("", |(n, _)| n)
    }

    /// The extractor of the harness whose numbers papers usually quote for it.
    pub fn default_extractor(self) -> &'static str {
        match self {
            VideoBench::VideoMme => "videomme_official",
            VideoBench::Mlvu => "mlvu_official",
            VideoBench::LongVideoBench => "lmms_eval_v0.4_longvideobench",
            VideoBench::EgoSchema => "lmms_eval_v0.4_egoschema",
            VideoBench::NextQa => "lmms_eval_v0.4_nextqa",
        }
    }
}

/// One question about one video.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McqItem {
    /// The benchmark's question id.
    pub id: String,
    /// The video as the dataset names it (file name, id or relative path).
    pub video: String,
    /// MLVU: the task folder its video lies in (the JSON file's stem).
    pub folder: Option<String>,
    /// The question.
    pub question: String,
    /// The choices' texts, without their `A.` / `(A)` labels, except EgoSchema's, which keep `A. ` as lmms-eval
    /// prompts and matches them.
    pub options: Vec<String>,
    /// Index of the right choice; `None` where the benchmark withholds it.
    pub answer: Option<usize>,
    /// Fields results are broken down by (duration, task type, ...).
    pub groups: BTreeMap<String, String>,
}

/// What the model is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct McqPrompt {
    /// A system prompt, where the benchmark has one.
    pub system: Option<String>,
    /// The user turn (question, options, instruction).
    pub user: String,
}

fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// Drops a leading `A.`, `A)` or `(A)` label that some files keep inside the option text.
fn unlabel(option: &str, i: usize) -> String {
    let l = letter(i);
    let t = option.trim();
    for label in [format!("{l}."), format!("({l})"), format!("{l})")] {
        if let Some(rest) = t.strip_prefix(&label) {
            return rest.trim().to_string();
        }
    }
    t.to_string()
}

fn record_error(path: &Path, record: impl ToString, reason: impl ToString) -> EvalError {
    EvalError::Record { path: path.display().to_string(), record: record.to_string(), reason: reason.to_string() }
}

fn required(path: &Path, row: &Row, index: usize, key: &str) -> Result<String, EvalError> {
    text(row, key).ok_or_else(|| record_error(path, index, format!("no `{key}`")))
}

fn string_list(row: &Row, key: &str) -> Option<Vec<String>> {
    match row.get(key)? {
        serde_json::Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_string)).collect(),
        // Some exports store lists as their Python repr; a JSON-looking string is accepted too.
        serde_json::Value::String(s) => serde_json::from_str(s).ok(),
        _ => None,
    }
}

fn groups(row: &Row, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter().filter_map(|k| text(row, k).map(|v| (k.to_string(), v))).collect()
}

/// Loads a benchmark file (MLVU: also its `json/` folder, every file in name order).
pub fn load(bench: VideoBench, path: &Path) -> Result<Vec<McqItem>, EvalError> {
    if path.is_dir() {
        if bench != VideoBench::Mlvu {
            return Err(EvalError::format(path.display(), "a folder is read for MLVU only; give the dataset file"));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| EvalError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut items = Vec::new();
        for f in files {
            items.extend(load(bench, &f)?);
        }
        return Ok(items);
    }
    let rows = read_rows(path)?;
    let mut items = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        items.push(match bench {
            VideoBench::VideoMme => video_mme(path, row, i)?,
            VideoBench::Mlvu => mlvu(path, row, i)?,
            VideoBench::LongVideoBench => long_video_bench(path, row, i)?,
            VideoBench::EgoSchema => ego_schema(path, row, i)?,
            VideoBench::NextQa => next_qa(path, row, i)?,
        });
    }
    if bench == VideoBench::EgoSchema {
        attach_egoschema_answers(path, &mut items)?;
    }
    Ok(items)
}

fn answer_from_letter(path: &Path, id: &str, letter_text: &str, options: usize) -> Result<usize, EvalError> {
    let l = letter_text.trim().trim_matches(|c: char| !c.is_ascii_alphabetic());
    match l.chars().next().map(|c| c.to_ascii_uppercase()) {
        Some(c) if l.len() == 1 && ((c as usize) - ('A' as usize)) < options => Ok(c as usize - 'A' as usize),
        _ => Err(record_error(path, id, format!("answer `{letter_text}` is not a letter of its {options} options"))),
    }
}

fn checked_index(path: &Path, id: &str, index: i64, options: usize) -> Result<usize, EvalError> {
    usize::try_from(index)
        .ok()
        .filter(|&i| i < options)
        .ok_or_else(|| record_error(path, id, format!("answer index {index} outside its {options} options")))
}

fn video_mme(path: &Path, row: &Row, i: usize) -> Result<McqItem, EvalError> {
    let id = required(path, row, i, "question_id")?;
    let options = string_list(row, "options").ok_or_else(|| record_error(path, &id, "no `options` list"))?;
    let answer = answer_from_letter(path, &id, &required(path, row, i, "answer")?, options.len())?;
    Ok(McqItem {
        video: text(row, "videoID").or_else(|| text(row, "video_id")).unwrap_or_default(),
        folder: None,
        question: required(path, row, i, "question")?,
        options: options.iter().enumerate().map(|(k, o)| unlabel(o, k)).collect(),
        answer: Some(answer),
        groups: groups(row, &["duration", "domain", "sub_category", "task_type"]),
        id,
    })
}

fn mlvu(path: &Path, row: &Row, i: usize) -> Result<McqItem, EvalError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let id = format!("{stem}_{i}");
    let options = string_list(row, "candidates").ok_or_else(|| record_error(path, &id, "no `candidates` list"))?;
    let truth = required(path, row, i, "answer")?;
    let answer = options
        .iter()
        .position(|c| c.trim() == truth.trim())
        .ok_or_else(|| record_error(path, &id, format!("answer `{truth}` is none of the candidates")))?;
    Ok(McqItem {
        video: required(path, row, i, "video")?,
        folder: Some(stem),
        question: required(path, row, i, "question")?,
        options,
        answer: Some(answer),
        groups: groups(row, &["question_type"]),
        id,
    })
}

fn long_video_bench(path: &Path, row: &Row, i: usize) -> Result<McqItem, EvalError> {
    let id = required(path, row, i, "id")?;
    let options: Vec<String> = match string_list(row, "candidates") {
        Some(c) => c,
        None => (0..5).filter_map(|k| text(row, &format!("option{k}"))).filter(|o| o != "N/A").collect(),
    };
    if options.len() < 2 {
        return Err(record_error(path, &id, "fewer than two options (`candidates` or `option0..4`)"));
    }
    let index = integer(row, "correct_choice").ok_or_else(|| record_error(path, &id, "no `correct_choice`"))?;
    Ok(McqItem {
        answer: Some(checked_index(path, &id, index, options.len())?),
        video: required(path, row, i, "video_path")?,
        folder: None,
        question: required(path, row, i, "question")?,
        options,
        groups: groups(row, &["duration_group", "question_category"]),
        id,
    })
}

/// EgoSchema's options keep the `A. ` labels, as lmms-eval sees them: its prompt lists `doc["option"]` verbatim and
/// its parser matches reply text against the labelled strings (`index2ans[X] = doc["option"][i].strip()`), so an
/// unlabelled text would match replies the official scorer does not. The HF rows carry the labels; the official
/// `questions.json` (from which the HF rows were made) gets `A. `..`E. ` prefixed.
fn ego_schema(path: &Path, row: &Row, i: usize) -> Result<McqItem, EvalError> {
    // The official questions.json: q_uid + "option 0".."option 4", answers in a separate file.
    if let Some(uid) = text(row, "q_uid") {
        let options: Vec<String> = (0..5)
            .filter_map(|k| text(row, &format!("option {k}")).map(|o| format!("{}. {}", letter(k), o.trim())))
            .collect();
        return Ok(McqItem {
            video: uid.clone(),
            folder: None,
            question: required(path, row, i, "question")?,
            options,
            answer: None,
            groups: BTreeMap::new(),
            id: uid,
        });
    }
    let id = required(path, row, i, "question_idx")?;
    let options = string_list(row, "option").ok_or_else(|| record_error(path, &id, "no `option` list"))?;
    let answer = match integer(row, "answer") {
        Some(a) => Some(checked_index(path, &id, a, options.len())?),
        None => None,
    };
    Ok(McqItem {
        video: required(path, row, i, "video_idx")?,
        folder: None,
        question: required(path, row, i, "question")?,
        options: options.iter().map(|o| o.trim().to_string()).collect(),
        answer,
        groups: BTreeMap::new(),
        id,
    })
}

/// The official EgoSchema release keeps the 500 subset answers in `subset_answers.json` next to `questions.json`.
fn attach_egoschema_answers(path: &Path, items: &mut [McqItem]) -> Result<(), EvalError> {
    let file = path.with_file_name("subset_answers.json");
    if items.iter().all(|i| i.answer.is_some()) || !file.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&file).map_err(|e| EvalError::io(&file, e))?;
    let answers: HashMap<String, i64> =
        serde_json::from_str(&text).map_err(|e| EvalError::format(file.display(), e))?;
    for item in items.iter_mut().filter(|i| i.answer.is_none()) {
        if let Some(&a) = answers.get(&item.id) {
            item.answer = Some(checked_index(&file, &item.id, a, item.options.len())?);
        }
    }
    Ok(())
}

/// NExT-QA's question types grouped as its paper reports them (Acc@C, Acc@T, Acc@D).
fn nextqa_family(kind: &str) -> Option<&'static str> {
    match kind {
        "CW" | "CH" => Some("causal"),
        "TN" | "TC" | "TP" => Some("temporal"),
        "DC" | "DL" | "DO" | "DB" => Some("descriptive"),
        _ => None,
    }
}

fn next_qa(path: &Path, row: &Row, i: usize) -> Result<McqItem, EvalError> {
    let video = required(path, row, i, "video")?;
    let id = format!("{video}_{}", text(row, "qid").unwrap_or_else(|| i.to_string()));
    let options: Vec<String> = (0..5).filter_map(|k| text(row, &format!("a{k}"))).collect();
    if options.len() < 2 {
        return Err(record_error(path, &id, "fewer than two options (`a0..a4`)"));
    }
    let index = integer(row, "answer").ok_or_else(|| record_error(path, &id, "no integer `answer`"))?;
    let mut g = groups(row, &["type"]);
    if let Some(family) = g.get("type").and_then(|t| nextqa_family(t)) {
        g.insert("family".into(), family.into());
    }
    Ok(McqItem {
        answer: Some(checked_index(path, &id, index, options.len())?),
        video,
        folder: None,
        question: required(path, row, i, "question")?,
        options,
        groups: g,
        id,
    })
}

/// The prompt the benchmark's reference harness sends (EVAL.md §2).
pub fn prompt(bench: VideoBench, item: &McqItem) -> McqPrompt {
    let lettered = |fmt: &dyn Fn(char, &str) -> String| -> Vec<String> {
        item.options.iter().enumerate().map(|(k, o)| fmt(letter(k), o)).collect()
    };
    match bench {
        VideoBench::VideoMme => McqPrompt {
            system: None,
            user: format!(
                "Select the best answer to the following multiple-choice question based on the video. Respond with \
                 only the letter (A, B, C, or D) of the correct option.\n{}\n{}\nThe best answer is:",
                item.question,
                lettered(&|l, o| format!("{l}. {o}")).join("\n")
            ),
        },
        VideoBench::Mlvu => McqPrompt {
            system: Some(
                "Carefully watch this video and pay attention to every detail. Based on your observations, select \
                 the best option that accurately addresses the question."
                    .into(),
            ),
            user: format!(
                "Question: {}\nOptions:\n{}",
                item.question,
                lettered(&|l, o| format!("({l}) {o}")).join("\n")
            ),
        },
        VideoBench::LongVideoBench => McqPrompt {
            system: None,
            user: format!("{}\n{}\n{LETTER_SUFFIX}\n", item.question, lettered(&|l, o| format!("{l}. {o}")).join("\n")),
        },
        // lmms-eval's `egoschema_doc_to_text`: the question, each (labelled) option on its own line, the suffix.
        VideoBench::EgoSchema => {
            McqPrompt { system: None, user: format!("{}\n{}\n{LETTER_SUFFIX}", item.question, item.options.join("\n")) }
        }
        VideoBench::NextQa => McqPrompt {
            system: None,
            user: format!("{}\n{}\n{LETTER_SUFFIX}", item.question, lettered(&|l, o| format!("{l}. {o}")).join("\n")),
        },
    }
}

/// The answer in the form the benchmark's extractor compares against: `(X) text` for MLVU, the letter otherwise.
pub fn answer_text(bench: VideoBench, item: &McqItem) -> Option<String> {
    let a = item.answer?;
    Some(match bench {
        VideoBench::Mlvu => format!("({}) {}", letter(a), item.options[a]),
        _ => letter(a).to_string(),
    })
}

/// Where the item's video may lie under the data root, most likely first (the layouts the benchmarks ship in).
pub fn video_candidates(bench: VideoBench, item: &McqItem, root: &Path) -> Vec<PathBuf> {
    let v = &item.video;
    let with_mp4 = |dir: &Path| {
        if Path::new(v).extension().is_some() {
            vec![dir.join(v)]
        } else {
            vec![dir.join(format!("{v}.mp4")), dir.join(format!("{v}.mkv")), dir.join(format!("{v}.webm"))]
        }
    };
    let mut dirs: Vec<PathBuf> = match bench {
        VideoBench::VideoMme => vec![root.join("data"), root.join("videos")],
        VideoBench::Mlvu => {
            let f = item.folder.clone().unwrap_or_default();
            vec![root.join("video").join(&f), root.join(&f)]
        }
        VideoBench::LongVideoBench | VideoBench::EgoSchema => vec![root.join("videos")],
        VideoBench::NextQa => vec![root.join("NExTVideo")],
    };
    dirs.push(root.to_path_buf());
    let mut out: Vec<PathBuf> = dirs.iter().flat_map(|d| with_mp4(d)).collect();
    if bench == VideoBench::NextQa {
        // The official release names videos by VidOR id; `map_vid_vidorID.json` maps the question file's ids.
        if let Some(rel) = std::fs::read_to_string(root.join("map_vid_vidorID.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<HashMap<String, String>>(&t).ok())
            .and_then(|m| m.get(v).cloned())
        {
            out.insert(0, root.join("NExTVideo").join(format!("{rel}.mp4")));
        }
    }
    out
}

/// The first candidate that exists, or an error naming where it looked.
pub fn find_video(bench: VideoBench, item: &McqItem, root: &Path) -> Result<PathBuf, String> {
    let candidates = video_candidates(bench, item, root);
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "video `{}` not found (looked for {})",
            item.video,
            candidates.iter().take(3).map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// Accuracy under one extractor, overall and broken down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McqScores {
    /// The extractor that read the replies.
    pub extractor: String,
    /// Seed of its random fallbacks (mixed with each sample id).
    pub seed: u64,
    /// Micro accuracy over every counted reply.
    pub overall: mcq::McqAccuracy,
    /// MLVU's M-Avg (mean of per-question-type accuracy); `None` for the micro-averaged benchmarks.
    pub macro_accuracy: Option<f64>,
    /// Accuracy per value of each breakdown field.
    pub by: BTreeMap<String, BTreeMap<String, mcq::McqAccuracy>>,
    /// Questions answered whose ground truth is withheld (not scored).
    pub answers_withheld: usize,
    /// Questions without a reply (failed samples, or not run): not scored.
    pub without_reply: usize,
}

fn item_seed(seed: u64, id: &str) -> u64 {
    super::fnv1a(seed, id.as_bytes())
}

/// Scores `replies` (id -> raw reply) under `extractor`.
pub fn evaluate(
    bench: VideoBench,
    items: &[McqItem],
    replies: &HashMap<String, String>,
    extractor: &str,
    seed: u64,
) -> Result<McqScores, EvalError> {
    let mut verdicts: Vec<(&McqItem, Verdict)> = Vec::new();
    let (mut withheld, mut without) = (0, 0);
    for item in items {
        let Some(reply) = replies.get(&item.id) else {
            without += 1;
            continue;
        };
        let Some(answer) = answer_text(bench, item) else {
            withheld += 1;
            continue;
        };
        let mut rng = SplitMix64::new(item_seed(seed, &item.id));
        let v = mcq::judge(extractor, reply, &answer, &item.options, &mut rng).map_err(EvalError::Setting)?;
        verdicts.push((item, v));
    }
    let tally =
        |subset: &[&(&McqItem, Verdict)]| mcq::McqAccuracy::tally(extractor, subset.iter().map(|(_, v)| v), seed);
    let all: Vec<&(&McqItem, Verdict)> = verdicts.iter().collect();
    let mut by: BTreeMap<String, BTreeMap<String, mcq::McqAccuracy>> = BTreeMap::new();
    let fields: std::collections::BTreeSet<&String> = items.iter().flat_map(|i| i.groups.keys()).collect();
    for field in fields {
        let mut values: BTreeMap<&str, Vec<&(&McqItem, Verdict)>> = BTreeMap::new();
        for v in &all {
            if let Some(value) = v.0.groups.get(field) {
                values.entry(value).or_default().push(v);
            }
        }
        by.insert(field.clone(), values.into_iter().map(|(k, s)| (k.to_string(), tally(&s))).collect());
    }
    let macro_accuracy = match bench {
        VideoBench::Mlvu => by
            .get("question_type")
            .filter(|m| !m.is_empty())
            .map(|m| m.values().map(|a| a.accuracy).sum::<f64>() / m.len() as f64),
        _ => None,
    };
    Ok(McqScores {
        extractor: extractor.to_string(),
        seed,
        overall: tally(&all),
        macro_accuracy,
        by,
        answers_withheld: withheld,
        without_reply: without,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, value: serde_json::Value) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, value.to_string()).unwrap();
        p
    }

    #[test]
    fn each_schema_loads_with_its_answer_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let vm = write(
            d,
            "videomme.json",
            json!([{"video_id": "001", "duration": "short", "domain": "Sports",
            "sub_category": "Football", "videoID": "abc", "question_id": "001-1", "task_type": "Counting Problem",
            "question": "How many goals?", "options": ["A. One.", "B. Two.", "C. Three.", "D. None."], "answer": "C"}]),
        );
        let items = load(VideoBench::VideoMme, &vm).unwrap();
        assert_eq!(items[0].options[0], "One.");
        assert_eq!(items[0].answer, Some(2));
        assert_eq!(items[0].groups["task_type"], "Counting Problem");
        let p = prompt(VideoBench::VideoMme, &items[0]).user;
        assert!(p.ends_with("C. Three.\nD. None.\nThe best answer is:"), "{p}");

        std::fs::create_dir(d.join("json")).unwrap();
        write(
            &d.join("json"),
            "2_needle.json",
            json!([{"video": "needle_1.mp4", "duration": 400.0,
            "question": "What is delivered?", "candidates": ["a box", "a letter"], "answer": "a letter",
            "question_type": "findNeedle"}]),
        );
        write(
            &d.join("json"),
            "4_count.json",
            json!([{"video": "count_3.mp4", "duration": 100.0,
            "question": "How many?", "candidates": ["1", "2", "3"], "answer": "3", "question_type": "count"}]),
        );
        let ml = load(VideoBench::Mlvu, &d.join("json")).unwrap();
        assert_eq!(ml.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["2_needle_0", "4_count_0"]);
        assert_eq!(answer_text(VideoBench::Mlvu, &ml[0]).unwrap(), "(B) a letter");
        let mp = prompt(VideoBench::Mlvu, &ml[0]);
        assert!(mp.system.is_some() && mp.user.ends_with("(A) a box\n(B) a letter"));
        let c = video_candidates(VideoBench::Mlvu, &ml[0], Path::new("/data/MLVU"));
        assert_eq!(c[0], Path::new("/data/MLVU/video/2_needle/needle_1.mp4"));

        let lvb = write(
            d,
            "lvb_val.json",
            json!([{"id": "q7", "video_path": "v7.mp4", "question": "What?",
            "option0": "x", "option1": "y", "option2": "z", "option3": "w", "option4": "N/A", "correct_choice": 3,
            "duration_group": 600, "question_category": "TOS"}]),
        );
        let l = load(VideoBench::LongVideoBench, &lvb).unwrap();
        assert_eq!((l[0].options.len(), l[0].answer), (4, Some(3)));
        assert_eq!(l[0].groups["duration_group"], "600");

        let csv = d.join("val.csv");
        std::fs::write(
            &csv,
            "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n\
            4010069381,369,640,480,why did the boy fall,1,6,CW,he ran,he slipped,he sat,he jumped,he slept\n",
        )
        .unwrap();
        let n = load(VideoBench::NextQa, &csv).unwrap();
        assert_eq!(n[0].id, "4010069381_6");
        assert_eq!(n[0].groups["family"], "causal");
        assert!(prompt(VideoBench::NextQa, &n[0]).user.contains("\nB. he slipped\n"));

        // EgoSchema's official release: answers in subset_answers.json, only for some questions.
        std::fs::create_dir(d.join("ego")).unwrap();
        let q = write(
            &d.join("ego"),
            "questions.json",
            json!([
            {"q_uid": "u1", "google_drive_id": "g", "question": "What did c do?", "option 0": "cook",
             "option 1": "clean", "option 2": "read", "option 3": "sleep", "option 4": "walk"},
            {"q_uid": "u2", "google_drive_id": "g", "question": "Why?", "option 0": "a", "option 1": "b",
             "option 2": "c", "option 3": "d", "option 4": "e"}]),
        );
        write(&d.join("ego"), "subset_answers.json", json!({"u1": 1}));
        let e = load(VideoBench::EgoSchema, &q).unwrap();
        assert_eq!((e[0].answer, e[1].answer), (Some(1), None));
        // Labelled as lmms-eval's rows are, and listed verbatim in its prompt.
        assert_eq!(e[0].options, ["A. cook", "B. clean", "C. read", "D. sleep", "E. walk"]);
        assert_eq!(
            prompt(VideoBench::EgoSchema, &e[0]).user,
            "What did c do?\nA. cook\nB. clean\nC. read\nD. sleep\nE. walk\n\
             Answer with the option's letter from the given choices directly."
        );
    }

    #[test]
    fn hugging_face_parquet_rows_load() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/eval/videomme_test.parquet"));
        let items = load(VideoBench::VideoMme, path).unwrap();
        assert_eq!(items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["001-1", "001-2", "002-1"]);
        assert_eq!(items[1].options, ["A bus.", "A bicycle.", "A boat.", "A plane."]);
        assert_eq!((items[1].answer, items[2].video.as_str()), (Some(1), "lost_video"));
        assert_eq!(items[2].groups["duration"], "medium");
    }

    #[test]
    fn bad_records_name_the_file_record_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let vm = write(
            dir.path(),
            "v.json",
            json!([{"question_id": "9-1", "question": "q",
            "options": ["A. a", "B. b"], "answer": "E"}]),
        );
        let e = load(VideoBench::VideoMme, &vm).unwrap_err().to_string();
        assert!(e.contains("v.json") && e.contains("9-1") && e.contains("`E`"), "{e}");
        let ml = write(
            dir.path(),
            "1_plotQA.json",
            json!([{"video": "x.mp4", "question": "q",
            "candidates": ["a", "b"], "answer": "c"}]),
        );
        assert!(load(VideoBench::Mlvu, &ml).unwrap_err().to_string().contains("1_plotQA_0"));
        assert!(load(VideoBench::NextQa, dir.path()).is_err(), "folders are for MLVU only");
    }

    #[test]
    fn aggregation_is_micro_with_breakdowns_and_mlvu_macro() {
        let item = |id: &str, kind: &str, answer: usize| McqItem {
            id: id.into(),
            video: "v".into(),
            folder: None,
            question: "q".into(),
            options: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            answer: Some(answer),
            groups: [("question_type".to_string(), kind.to_string())].into(),
        };
        // Three "count" questions (2 right) and one "needle" question (right).
        let items = vec![item("1", "count", 0), item("2", "count", 1), item("3", "count", 2), item("4", "needle", 3)];
        let replies: HashMap<String, String> =
            [("1", "(A) a"), ("2", "(B) b"), ("3", "(D) d"), ("4", "(D) d")].map(|(k, v)| (k.into(), v.into())).into();
        let s = evaluate(VideoBench::Mlvu, &items, &replies, "mlvu_official", 0).unwrap();
        assert_eq!((s.overall.correct, s.overall.counted), (3, 4));
        assert!((s.macro_accuracy.unwrap() - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        assert_eq!(s.by["question_type"]["count"].correct, 2);
        let s = evaluate(VideoBench::NextQa, &items[..2], &replies, "lmms_eval_v0.4_nextqa", 0).unwrap();
        assert_eq!(s.macro_accuracy, None);
        let mut partial = replies.clone();
        partial.remove("4");
        assert_eq!(evaluate(VideoBench::Mlvu, &items, &partial, "mlvu_official", 0).unwrap().without_reply, 1);
        assert!(evaluate(VideoBench::Mlvu, &items, &replies, "nope", 0).is_err());
    }

    #[test]
    fn random_fallbacks_do_not_depend_on_order() {
        let items: Vec<McqItem> = (0..30)
            .map(|i| McqItem {
                id: format!("q{i}"),
                video: "v".into(),
                folder: None,
                question: "q".into(),
                options: vec![String::new(); 5],
                answer: Some(i % 5),
                groups: BTreeMap::new(),
            })
            .collect();
        let replies: HashMap<String, String> = items.iter().map(|i| (i.id.clone(), "no idea".into())).collect();
        let e = "lmms_eval_v0.4_egoschema";
        let forward = evaluate(VideoBench::EgoSchema, &items, &replies, e, 3).unwrap();
        let reversed: Vec<McqItem> = items.iter().rev().cloned().collect();
        assert_eq!(forward.overall, evaluate(VideoBench::EgoSchema, &reversed, &replies, e, 3).unwrap().overall);
    }
}
