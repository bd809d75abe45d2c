//! Multiple-choice answer extractors, named and versioned, because the harnesses disagree (EVAL.md §5): the same
//! reply can be right under one rule, wrong under another, or left out of the average. Each extractor maps a raw
//! reply to what its official code compares with the answer ([`extract`]: a letter, or the slice or token the
//! MLVU/MVBench scripts compare) and says how "nothing" counts ([`judge`]).
//!
//! Each one is a transcription of the official function named below, and is proved equal to it by
//! `tests/mcq_official.rs` on 2,400 seeded realistic and adversarial replies (`tests/fixtures/mcq/`, where a
//! Python transcription of each official function wrote the expected outputs).
//!
//! | name | official code (repo, file, function) | rule | nothing counts as |
//! |---|---|---|---|
//! | `videomme_official` | thanku-all/parse_answer (linked by the BradyFU/Video-MME README) `eval_your_results.py::extract_characters_regex` | strip; delete every occurrence of 10 prefixes (two pairs fused by missing commas in the original list); more than 10 words without `[ABCD]` -> nothing; else the first `[ABCD]` anywhere | excluded |
//! | `lmms_eval_le0.4_videomme` | EvolvingLMMs-Lab/lmms-eval v0.4 `lmms_eval/tasks/videomme/utils.py::extract_characters_regex` | the same with the first six prefixes only | wrong |
//! | `lmms_eval_2026_priority` | lmms-eval HEAD (75571cf, PR #1274) `lmms_eval/tasks/_task_utils/mcq_extract.py::extract_mcq_answer` | strip whitespace, then `,.!?;:'"` one after the other, pad with spaces; candidates `(X)` 6, `X.` 5, `X:` 4, `X)` 3, `X ` 2 (each at its last occurrence), the first letter after each answer phrase (27, found in the lower-cased text) 7, a leading letter not followed by a letter 10, a trailing one not preceded by one 9; only if none, any occurrence 0 (the last); the highest priority, then the latest position | wrong |
//! | `lmms_eval_v0.4_longvideobench` | lmms-eval v0.4 `lmms_eval/tasks/longvideobench/utils.py::parse_multi_choice_response` (unchanged v0.3.0 .. HEAD) | delete its 8 prefixes (commas fixed, no `Answer:`/`Option:`); over 10 words without `[ABCDE]`, or no `[ABCDE]` -> a random option; else the first `[ABCDE]` | a random option |
//! | `lmms_eval_v0.4_mvbench` | lmms-eval v0.4 `lmms_eval/tasks/mvbench/utils.py::mcq_acc` + `mvbench_aggregate_results` | `^([A-E])\.\s*(.+)$` (ignoring case) on the stripped reply -> its letter; else newlines/tabs to spaces, VQA punctuation to `""` or `" "`, dots not before a digit removed (at most 32: `re.UNICODE` is passed as `count`), strip quotes and brackets, lower-case, the first `\b[A-E]\b` | a reply equal to `""` is skipped |
//! | `mlvu_official` | JUNJIE99/MLVU `evaluation/multiple_choice_evaluation/choice_bench.py::check_ans` | the character before the first `)` (`""` when `)` comes first), else the whole reply, equal (case-sensitive) to what lies between the answer's first `(` and first `)` | wrong |
//! | `mvbench_official` | OpenGVLab/Ask-Anything `video_chat2/mvbench.ipynb::check_ans` | lower-cased reply split on single spaces, the first token; dots removed, a substring of the answer's first token, or that token a substring of it (an empty token matches everything) | wrong |
//! | `langdc_mvbench` | NIneeeeeem/LangDC `eval/mvbench/evaluation/evaluate_mvbench.py::check_ans` | the same with the **second** token | wrong |
//! | `sfllava_mcq` | apple/ml-slowfast-llava (= hukcc/D-CoDe) `eval/eval_multiple_choice_qa.py::map_prediction_to_option` + `check_ans` | a first character in `abcdeABCDE` is the pick; then, if `answer is ` occurs, the text from its first `answer is`; the first of `A:`/`A)` .. `E:`/`E)` present overrides the pick | wrong |
//! | `lmms_eval_v0.4_egoschema` | lmms-eval v0.4 `lmms_eval/tasks/egoschema/utils.py::parse_multi_choice_response` | strip `,.!?;:'` one after the other, pad; candidates `(X)`, `X `, `X.` all collected (not in turn); none and over 5 words -> the options whose stripped text occurs (lower-cased); none -> a random option; several -> the one whose last occurrence is earliest (the first of equals) | a random option |
//! | `lmms_eval_v0.4_nextqa` | lmms-eval v0.4 `lmms_eval/tasks/nextqa/utils.py::parse_multi_choice_response` (= MMMU `eval/eval_utils.py`) | the same, but each letter form only when the previous found nothing, positions from `(X)` when bracketed else ` X ` (absent: -1), and the latest wins | a random option |
//!
//! Where tokensieve still differs from that code, and why:
//! - Random fallbacks (`lmms_eval_v0.4_longvideobench`, `_egoschema`, `_nextqa`) draw from the caller's seeded
//!   [`SplitMix64`], not from Python's global `random`: no other language reproduces its stream, so the test checks
//!   only that the random branch is taken and one of the options drawn.
//! - Replies on which the official script raises and aborts the whole evaluation count as wrong: `langdc_mvbench`
//!   on a reply without a space (`pred_list[1]`: IndexError), `sfllava_mcq` on an empty reply (`pred[0]`),
//!   `mvbench_official`/`langdc_mvbench` on an answer with no text after its first token (`gt_content[-1]`), and
//!   `mlvu_official` on an answer without `(`/`)` (then the answer itself, trimmed, is the option).
//! - Option texts that are empty stand for "text unknown" (`tokensieve score mcq` given only an option count) and
//!   match no reply in the MMMU-style content branch; the official `"" in response` matches every reply.
//! - Python's character classes are followed where they differ from Rust's (whitespace includes `\x1c`..`\x1f`),
//!   except that `\d` is ASCII only (Python also takes other Unicode decimal digits) and "letter"/"word character"
//!   use Rust's Alphabetic property (Python excludes the combining vowel signs it includes). The fixture's unicode
//!   replies avoid those two corners.
//! - Letters beyond the options are never returned by the MMMU-style parsers and the priority parser, which get the
//!   option letters as their choices (the official tasks pass theirs: `A`..`E` or `A`..`D`).
//!
//! Not implemented: VLMEvalKit's LLM-judge fallback (its regex stage is `videomme_official`); a run that needs it
//! stores the raw replies, which any judge can read later.

use crate::pruners::primitives::SplitMix64;
use serde::Serialize;

/// Every extractor name.
pub const EXTRACTORS: [&str; 11] = [
    "videomme_official",
    "lmms_eval_le0.4_videomme",
    "lmms_eval_2026_priority",
    "lmms_eval_v0.4_longvideobench",
    "lmms_eval_v0.4_mvbench",
    "mlvu_official",
    "mvbench_official",
    "langdc_mvbench",
    "sfllava_mcq",
    "lmms_eval_v0.4_egoschema",
    "lmms_eval_v0.4_nextqa",
];

/// Video-MME's prefixes as its source writes them: two pairs are fused by missing commas.
const VIDEOMME_PREFIXES: [&str; 10] = [
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
    "Answer:",
    "Option:",
    "The correct answer",
    "The correct option",
];

/// LongVideoBench's copy: commas fixed, the last four of Video-MME's list absent.
const LONGVIDEOBENCH_PREFIXES: [&str; 8] = [
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
];

/// `extract_mcq_answer`'s answer phrases, in its order (the order decides nothing: every phrase adds candidates).
const ANSWER_PHRASES: [&str; 27] = [
    "the answer is",
    "answer is",
    "the correct answer is",
    "correct answer is",
    "the best answer is",
    "best answer is",
    "the correct option is",
    "correct option is",
    "the best option is",
    "best option is",
    "the choice is",
    "choice is",
    "the correct choice is",
    "correct choice is",
    "i choose",
    "i select",
    "i pick",
    "my answer is",
    "my choice is",
    "옵션",
    "정답은",
    "답은",
    "답:",
    "答案是",
    "答案为",
    "选",
    "答えは",
];

/// What an extractor made of one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted, right or wrong.
    Scored(bool),
    /// Left out of numerator and denominator.
    Excluded,
}

/// What an extractor read from one reply: the value its official code compares with the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// A letter (upper case), or for `mlvu_official`, `mvbench_official` and `langdc_mvbench` the slice or token
    /// compared with the answer; `None` where nothing was read (or the official code would raise).
    pub pick: Option<String>,
    /// The pick is the random fallback's draw.
    pub random: bool,
}

impl Reading {
    fn read(pick: Option<String>) -> Self {
        Reading { pick, random: false }
    }

    fn letter(pick: Option<char>) -> Self {
        Reading::read(pick.map(String::from))
    }

    fn random(letters: &[char], rng: &mut SplitMix64) -> Self {
        Reading { pick: Some(letters[rng.below(letters.len())].to_string()), random: true }
    }
}

/// Python's `str.isspace`: Rust's White_Space plus the four information separators `\x1c`..`\x1f`.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()` without arguments.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// `len(s.split())`.
fn py_words(s: &str) -> usize {
    s.split(py_space).filter(|w| !w.is_empty()).count()
}

/// A `\w` character of Python's `re` on `str` (alphanumeric or `_`).
fn py_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Python strips each character in turn (`s.strip(a).strip(b)...`), not the set at once.
fn strip_each<'a>(mut s: &'a str, chars: &[char]) -> &'a str {
    for &c in chars {
        s = s.trim_matches(c);
    }
    s
}

/// The last start of `pat` in `hay`, counted in characters (Python's `rfind`).
fn rfind_chars(hay: &[char], pat: &[char]) -> Option<usize> {
    (0..=hay.len().checked_sub(pat.len())?).rev().find(|&i| hay[i..i + pat.len()] == *pat)
}

/// The first start of `pat` in `hay` at or after `from`, in characters (Python's `find(sub, start)`).
fn find_chars(hay: &[char], pat: &[char], from: usize) -> Option<usize> {
    (from..=hay.len().checked_sub(pat.len())?).find(|&i| hay[i..i + pat.len()] == *pat)
}

fn first_of(s: &str, letters: &str) -> Option<char> {
    s.chars().find(|c| letters.contains(*c))
}

fn strip_prefixes(reply: &str, prefixes: &[&str]) -> String {
    let mut s = py_strip(reply).to_string();
    for p in prefixes {
        s = s.replace(p, "");
    }
    s
}

fn videomme(reply: &str, prefixes: &[&str]) -> Option<char> {
    let s = strip_prefixes(reply, prefixes);
    if py_words(&s) > 10 && first_of(&s, "ABCD").is_none() {
        return None;
    }
    first_of(&s, "ABCD")
}

/// `extract_mcq_answer`: every candidate with its priority and character position; the highest (priority,
/// position) wins, the first appended among equals (Python's stable sort).
fn priority(response: &str, choices: &[char]) -> Option<char> {
    if py_strip(response).is_empty() {
        return None;
    }
    let t = strip_each(py_strip(response), &[',', '.', '!', '?', ';', ':', '\'', '"']);
    let text: Vec<char> = format!(" {t} ").chars().collect();
    let mut candidates: Vec<(char, usize, u8)> = Vec::new();
    for (open, close, p) in
        [(Some('('), Some(')'), 6), (None, Some('.'), 5), (None, Some(':'), 4), (None, Some(')'), 3)]
            .into_iter()
            .chain([(None, Some(' '), 2)])
    {
        for &ch in choices {
            let pat: Vec<char> = open.into_iter().chain([ch]).chain(close).collect();
            if let Some(pos) = rfind_chars(&text, &pat) {
                candidates.push((ch, pos, p));
            }
        }
    }
    // Python finds the phrase in the lower-cased text and searches the original from that index on.
    let lower: Vec<char> = text.iter().collect::<String>().to_lowercase().chars().collect();
    for phrase in ANSWER_PHRASES {
        let pat: Vec<char> = phrase.chars().collect();
        if let Some(idx) = find_chars(&lower, &pat, 0) {
            let after = idx + pat.len();
            for &ch in choices {
                if let Some(pos) = find_chars(&text, &[ch], after) {
                    candidates.push((ch, pos, 7));
                }
            }
        }
    }
    let stripped: Vec<char> = py_strip(&text.iter().collect::<String>()).chars().collect();
    let n = stripped.len();
    for &ch in choices {
        if stripped.first() == Some(&ch) && (n == 1 || !stripped[1].is_alphabetic()) {
            candidates.push((ch, 0, 10));
        }
    }
    for &ch in choices {
        if stripped.last() == Some(&ch) && (n == 1 || !stripped[n - 2].is_alphabetic()) {
            candidates.push((ch, text.len() - 1, 9));
        }
    }
    if candidates.is_empty() {
        for &ch in choices {
            if let Some(pos) = rfind_chars(&text, &[ch]) {
                candidates.push((ch, pos, 0));
            }
        }
    }
    let mut best: Option<(char, usize, u8)> = None;
    for c in candidates {
        if best.is_none_or(|b| (c.2, c.1) > (b.2, b.1)) {
            best = Some(c);
        }
    }
    best.map(|(ch, _, _)| ch)
}

/// `mcq_acc`'s `processPunctuation`: VQA-style punctuation to `""` (when spaced, or when the text has a
/// digit-comma-digit) or `" "`, then dots not before a digit removed, at most 32 (`re.UNICODE` lands in `count`).
fn mvbench_punctuation(in_text: &str) -> String {
    let chars: Vec<char> = in_text.chars().collect();
    let comma_digits = chars.windows(3).any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit());
    let mut out = in_text.to_string();
    for p in [";", "/", "[", "]", "\"", "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
    {
        let spaced = in_text.contains(&format!("{p} ")) || in_text.contains(&format!(" {p}"));
        out = out.replace(p, if spaced || comma_digits { "" } else { " " });
    }
    let chars: Vec<char> = out.chars().collect();
    let mut removed = 0;
    let mut kept = String::with_capacity(out.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '.' && removed < 32 && !chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
            removed += 1;
            continue;
        }
        kept.push(c);
    }
    kept
}

/// `mcq_acc`'s `process`: the letter it reads, or `None` (it returns the cleaned text, which never equals a letter).
fn mvbench_process(answer: &str) -> Option<char> {
    let s: Vec<char> = py_strip(answer).chars().collect();
    // ^([A-E])\.\s*(.+)$ with IGNORECASE: after `X.` and any whitespace, at least one character and no newline
    // (the stripped text cannot end in one, so `$` can only match at the end).
    if s.len() >= 3 && s[1] == '.' && ('A'..='E').contains(&s[0].to_ascii_uppercase()) {
        let rest: Vec<char> = s[2..].iter().copied().skip_while(|&c| py_space(c)).collect();
        if !rest.is_empty() && !rest.contains(&'\n') {
            return Some(s[0].to_ascii_uppercase());
        }
    }
    let a = answer.replace(['\n', '\t'], " ");
    let a = mvbench_punctuation(py_strip(&a));
    let a = strip_each(&a, &['\'', '"', ')', '(']);
    let a: Vec<char> = py_strip(a).to_lowercase().chars().collect();
    // \b([A-E])\b, ignoring case.
    (0..a.len())
        .find(|&i| {
            ('a'..='e').contains(&a[i]) && (i == 0 || !py_word(a[i - 1])) && (i + 1 == a.len() || !py_word(a[i + 1]))
        })
        .map(|i| a[i].to_ascii_uppercase())
}

/// lmms-eval v0.4's EgoSchema copy of the MMMU parser.
fn egoschema(reply: &str, letters: &[char], texts: &[String], rng: &mut SplitMix64) -> Reading {
    let response = format!(" {} ", strip_each(reply, &[',', '.', '!', '?', ';', ':', '\'']));
    let mut candidates: Vec<String> = Vec::new();
    let forms: [fn(char) -> String; 3] = [|l| format!("({l})"), |l| format!("{l} "), |l| format!("{l}.")];
    for form in forms {
        candidates.extend(letters.iter().map(|&l| form(l)).filter(|c| response.contains(c.as_str())));
    }
    let lower = response.to_lowercase();
    let mut by_text = false;
    if candidates.is_empty() && py_words(&response) > 5 {
        candidates = content_candidates(&lower, letters, texts);
        by_text = true;
    }
    if candidates.is_empty() {
        return Reading::random(letters, rng);
    }
    // All candidates occur, so every rfind succeeds; byte positions order as Python's character positions.
    let position = |c: &String| -> usize {
        if by_text {
            lower.rfind(&text_of(c, letters, texts)).unwrap_or(0)
        } else {
            response.rfind(c.as_str()).unwrap_or(0)
        }
    };
    let mut best = &candidates[0];
    for c in &candidates[1..] {
        if position(c) < position(best) {
            best = c;
        }
    }
    Reading::read(Some(best.replace(['(', ')', '.'], "").trim().to_string()))
}

/// lmms-eval v0.4's NExT-QA copy, which is MMMU's own.
fn nextqa(reply: &str, letters: &[char], texts: &[String], rng: &mut SplitMix64) -> Reading {
    let response = format!(" {} ", strip_each(reply, &[',', '.', '!', '?', ';', ':', '\'']));
    let has = |l: &char, form: &dyn Fn(char) -> String| response.contains(&form(*l));
    let mut candidates: Vec<char> = letters.iter().copied().filter(|l| has(l, &|l| format!("({l})"))).collect();
    let with_brackets = !candidates.is_empty();
    if candidates.is_empty() {
        candidates = letters.iter().copied().filter(|l| has(l, &|l| format!("{l} "))).collect();
    }
    if candidates.is_empty() {
        candidates = letters.iter().copied().filter(|l| has(l, &|l| format!("{l}."))).collect();
    }
    let lower = response.to_lowercase();
    let mut by_text = false;
    if candidates.is_empty() && py_words(&response) > 5 {
        candidates = content_candidates(&lower, letters, texts).into_iter().filter_map(|s| s.chars().next()).collect();
        by_text = true;
    }
    if candidates.is_empty() {
        return Reading::random(letters, rng);
    }
    // Python's rfind: -1 when absent (` X ` may be missing when the candidate came from `X.`).
    let position = |l: char| -> i64 {
        let found = if by_text {
            lower.rfind(&text_of(&l.to_string(), letters, texts))
        } else if with_brackets {
            response.rfind(&format!("({l})"))
        } else {
            response.rfind(&format!(" {l} "))
        };
        found.map_or(-1, |p| p as i64)
    };
    let mut best = candidates[0];
    for &c in &candidates[1..] {
        if position(c) > position(best) {
            best = c;
        }
    }
    Reading::letter(Some(best))
}

/// The letters whose stripped, lower-cased option text occurs in the lower-cased response (empty texts: none).
fn content_candidates(lower: &str, letters: &[char], texts: &[String]) -> Vec<String> {
    letters
        .iter()
        .zip(texts)
        .filter(|(_, t)| !py_strip(t).is_empty() && lower.contains(&py_strip(t).to_lowercase()))
        .map(|(l, _)| l.to_string())
        .collect()
}

fn text_of(letter: &str, letters: &[char], texts: &[String]) -> String {
    let i = letters.iter().position(|l| letter.starts_with(*l)).unwrap_or(0);
    texts.get(i).map(|t| py_strip(t).to_lowercase()).unwrap_or_default()
}

fn sfllava(reply: &str) -> Option<char> {
    // The official `pred[0]` raises on an empty reply; here it reads nothing.
    let first = reply.chars().next()?;
    let mut pick = "abcdeABCDE".contains(first).then(|| first.to_ascii_uppercase());
    let mut pred = reply;
    if reply.contains("answer is ") {
        if let Some(i) = reply.find("answer is") {
            pred = &reply[i..];
        }
    }
    if let Some(l) = "ABCDE".chars().find(|l| pred.contains(&format!("{l}:")) || pred.contains(&format!("{l})"))) {
        pick = Some(l);
    }
    pick
}

/// MLVU's `pred[index3-1:index3]` around the first `)`: `""` when the reply starts with it.
fn mlvu_slice(reply: &str) -> String {
    match reply.find(')') {
        Some(0) => String::new(),
        Some(i) => reply[..i].chars().last().map(String::from).unwrap_or_default(),
        None => reply.to_string(),
    }
}

/// What MLVU's `check_ans` compares with: between the answer's first `(` and its first `)`.
fn mlvu_option(answer: &str) -> String {
    match (answer.find('('), answer.find(')')) {
        (Some(o), Some(c)) if c > o => answer[o + 1..c].to_string(),
        (Some(_), Some(_)) => String::new(),
        _ => answer.trim().to_string(),
    }
}

/// The letter inside `(X)` of an MLVU/MVBench-style answer, or the answer itself when it is a bare letter.
fn answer_letter(answer: &str) -> String {
    let a = answer.trim();
    match (a.find('('), a.find(')')) {
        (Some(o), Some(c)) if c > o + 1 => a[o + 1..c].trim().to_string(),
        _ => a.trim_matches(|c: char| !c.is_alphanumeric()).to_string(),
    }
}

fn letters_for(options: &[String]) -> Vec<char> {
    ('A'..='Z').take(options.len().clamp(1, 26)).collect()
}

/// Reads one reply as `extractor`'s official code does. `options` are the choices' texts: their number gives the
/// letters and the random fallbacks' range, and the MMMU-style parsers also match their texts (empty ones never);
/// `rng` draws the random fallbacks.
pub fn extract(extractor: &str, reply: &str, options: &[String], rng: &mut SplitMix64) -> Result<Reading, String> {
    let letters = letters_for(options);
    Ok(match extractor {
        "videomme_official" => Reading::letter(videomme(reply, &VIDEOMME_PREFIXES)),
        "lmms_eval_le0.4_videomme" => Reading::letter(videomme(reply, &VIDEOMME_PREFIXES[..6])),
        "lmms_eval_2026_priority" => Reading::letter(priority(reply, &letters)),
        "lmms_eval_v0.4_longvideobench" => {
            let s = strip_prefixes(reply, &LONGVIDEOBENCH_PREFIXES);
            // Over ten words without a letter, or no letter at all: the same random fallback.
            match first_of(&s, "ABCDE") {
                Some(c) => Reading::letter(Some(c)),
                None => Reading::random(&letters, rng),
            }
        }
        "lmms_eval_v0.4_mvbench" => Reading::letter(mvbench_process(reply)),
        "mlvu_official" => Reading::read(Some(mlvu_slice(reply))),
        "mvbench_official" => Reading::read(reply.to_lowercase().split(' ').next().map(String::from)),
        // The official `pred_list[1]` raises on a reply without a space; here it reads nothing.
        "langdc_mvbench" => Reading::read(reply.to_lowercase().split(' ').nth(1).map(String::from)),
        "sfllava_mcq" => Reading::letter(sfllava(reply)),
        "lmms_eval_v0.4_egoschema" => egoschema(reply, &letters, options, rng),
        "lmms_eval_v0.4_nextqa" => nextqa(reply, &letters, options, rng),
        other => return Err(format!("unknown extractor `{other}` (known: {})", EXTRACTORS.join(", "))),
    })
}

/// Judges one reply against the answer (a letter, or `(X) text` for the MVBench and MLVU rules).
/// `options` and `rng` are as for [`extract`].
pub fn judge(
    extractor: &str,
    reply: &str,
    answer: &str,
    options: &[String],
    rng: &mut SplitMix64,
) -> Result<Verdict, String> {
    let reading = extract(extractor, reply, options, rng)?;
    let truth = answer_letter(answer).to_uppercase();
    let is_truth = reading.pick.as_deref() == Some(truth.as_str());
    Ok(match extractor {
        "videomme_official" if reading.pick.is_none() => Verdict::Excluded,
        // mvbench_aggregate_results skips exactly the empty string.
        "lmms_eval_v0.4_mvbench" if reply.is_empty() => Verdict::Excluded,
        "mlvu_official" => Verdict::Scored(reading.pick.as_deref() == Some(mlvu_option(answer).as_str())),
        "mvbench_official" | "langdc_mvbench" => {
            let gt = answer.to_lowercase().split(' ').next().unwrap_or_default().to_string();
            Verdict::Scored(reading.pick.is_some_and(|p| gt.contains(&p.replace('.', "")) || p.contains(&gt)))
        }
        _ => Verdict::Scored(is_truth),
    })
}

/// Accuracy under one extractor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McqAccuracy {
    /// Extractor name.
    pub extractor: String,
    /// Correct replies.
    pub correct: usize,
    /// Replies counted.
    pub counted: usize,
    /// Replies left out by the extractor's rule.
    pub excluded: usize,
    /// `correct / counted`.
    pub accuracy: f64,
    /// Seed of the random fallbacks.
    pub seed: u64,
}

impl McqAccuracy {
    /// Counts verdicts: excluded replies leave numerator and denominator.
    pub fn tally<'a>(extractor: &str, verdicts: impl IntoIterator<Item = &'a Verdict>, seed: u64) -> Self {
        let (mut correct, mut counted, mut excluded) = (0, 0, 0);
        for v in verdicts {
            match v {
                Verdict::Scored(ok) => {
                    counted += 1;
                    correct += usize::from(*ok);
                }
                Verdict::Excluded => excluded += 1,
            }
        }
        let accuracy = if counted == 0 { 0.0 } else { correct as f64 / counted as f64 };
        McqAccuracy { extractor: extractor.to_string(), correct, counted, excluded, accuracy, seed }
    }
}

/// Scores `(reply, answer, option texts)` triples.
pub fn accuracy(extractor: &str, items: &[(String, String, Vec<String>)], seed: u64) -> Result<McqAccuracy, String> {
    let mut rng = SplitMix64::new(seed);
    let verdicts = items
        .iter()
        .map(|(reply, answer, options)| judge(extractor, reply, answer, options, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(McqAccuracy::tally(extractor, &verdicts, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four() -> Vec<String> {
        ["a red car", "a blue bus", "two dogs", "nothing"].map(String::from).to_vec()
    }

    fn j(e: &str, reply: &str, answer: &str) -> Verdict {
        judge(e, reply, answer, &four(), &mut SplitMix64::new(0)).unwrap()
    }

    #[test]
    fn videomme_rules_and_their_exclusion_policies() {
        assert_eq!(j("videomme_official", "The best answer is B.", "B"), Verdict::Scored(true));
        // "A man is walking" reads as A under the first-letter rule: the documented pitfall.
        assert_eq!(j("videomme_official", "A man is walking", "C"), Verdict::Scored(false));
        let long = "it is very hard to tell what happens in this clip from the frames given";
        assert_eq!(j("videomme_official", long, "C"), Verdict::Excluded);
        assert_eq!(j("lmms_eval_le0.4_videomme", long, "C"), Verdict::Scored(false));
        // "Answer:" is stripped only by the official list.
        assert_eq!(j("videomme_official", "Answer: D", "D"), Verdict::Scored(true));
    }

    #[test]
    fn priority_extractor_prefers_explicit_forms() {
        assert_eq!(j("lmms_eval_2026_priority", "I think the answer is (C).", "C"), Verdict::Scored(true));
        assert_eq!(j("lmms_eval_2026_priority", "B. because A is wrong", "B"), Verdict::Scored(true));
        assert_eq!(j("lmms_eval_2026_priority", "nothing fits", "A"), Verdict::Scored(false));
    }

    #[test]
    fn mvbench_mlvu_and_sfllava_rules() {
        assert_eq!(j("mvbench_official", "(b) the man runs", "(B) the man runs"), Verdict::Scored(true));
        assert_eq!(j("mvbench_official", "", "(B) x"), Verdict::Scored(true), "the documented empty-token pitfall");
        assert_eq!(j("langdc_mvbench", "Best option: (c)", "(C) x"), Verdict::Scored(false));
        assert_eq!(j("langdc_mvbench", "option (c) x", "(C) x"), Verdict::Scored(true));
        assert_eq!(j("mlvu_official", "B) a dog", "(B) dog"), Verdict::Scored(true));
        assert_eq!(j("sfllava_mcq", "c", "C"), Verdict::Scored(true));
        assert_eq!(j("sfllava_mcq", "So the answer is D: red", "D"), Verdict::Scored(true));
        assert_eq!(j("lmms_eval_v0.4_mvbench", "", "A"), Verdict::Excluded);
        assert!(judge("nope", "A", "A", &four(), &mut SplitMix64::new(0)).is_err());
    }

    #[test]
    fn official_quirks_kept() {
        // LongVideoBench's list lacks "Answer:", so its `A` is read; Video-MME's removes it first.
        assert_eq!(j("lmms_eval_v0.4_longvideobench", "Answer: the dog", "A"), Verdict::Scored(true));
        assert_eq!(j("videomme_official", "Answer: the dog", "A"), Verdict::Excluded);
        // SF-LLaVA: a later `X)` overrides the first letter.
        assert_eq!(j("sfllava_mcq", "A man says B) hello", "B"), Verdict::Scored(true));
        // MLVU compares case-sensitively, and `""` when the reply starts with `)`.
        assert_eq!(j("mlvu_official", "b) dog", "(B) dog"), Verdict::Scored(false));
        assert_eq!(j("mlvu_official", ")B", "(B) dog"), Verdict::Scored(false));
        // MVBench splits on single spaces: a leading space makes the empty token, which matches any answer.
        assert_eq!(j("mvbench_official", " (a) x", "(B) x"), Verdict::Scored(true));
        // lmms-eval's MVBench skips exactly "", not blank replies.
        assert_eq!(j("lmms_eval_v0.4_mvbench", " ", "A"), Verdict::Scored(false));
        // Lower-casing that lengthens the text (`İ`) must not shift positions onto another character.
        assert_eq!(
            j("lmms_eval_v0.4_nextqa", "İİ we can see a blue bus and two dogs today", "C"),
            Verdict::Scored(true)
        );
    }

    #[test]
    fn random_fallbacks_are_seeded() {
        let items: Vec<(String, String, Vec<String>)> =
            (0..50).map(|_| ("no idea".to_string(), "A".to_string(), four())).collect();
        let a = accuracy("lmms_eval_v0.4_longvideobench", &items, 7).unwrap();
        assert_eq!(a, accuracy("lmms_eval_v0.4_longvideobench", &items, 7).unwrap());
        assert!(a.correct > 0 && a.correct < 50, "{a:?}");
        let b = accuracy("lmms_eval_v0.4_egoschema", &items, 7).unwrap();
        assert!(b.correct > 0 && b.correct < 50 && b.excluded == 0, "{b:?}");
    }

    #[test]
    fn mmmu_style_parsers_differ_in_candidates_and_ties() {
        for e in ["lmms_eval_v0.4_egoschema", "lmms_eval_v0.4_nextqa"] {
            assert_eq!(j(e, "(B)", "B"), Verdict::Scored(true));
            assert_eq!(j(e, "C.", "C"), Verdict::Scored(true), "trailing dot stripped, then `C ` matches");
            assert_eq!(j(e, "The video shows two dogs playing in a yard", "C"), Verdict::Scored(true));
        }
        // NExT-QA (MMMU) tries brackets first; EgoSchema's copy collects every form and keeps the earliest.
        assert_eq!(j("lmms_eval_v0.4_nextqa", "A or maybe (D)", "D"), Verdict::Scored(true));
        assert_eq!(j("lmms_eval_v0.4_egoschema", "A or maybe (D)", "A"), Verdict::Scored(true));
        // Two bracketed candidates: EgoSchema keeps the one whose last occurrence comes first, NExT-QA the last.
        assert_eq!(j("lmms_eval_v0.4_egoschema", "(A) not (B)", "A"), Verdict::Scored(true));
        assert_eq!(j("lmms_eval_v0.4_nextqa", "(A) not (B)", "B"), Verdict::Scored(true));
        // Option texts count only over five words, and an empty text matches nothing.
        let long = "there is nothing to see in this clip";
        assert_eq!(j("lmms_eval_v0.4_nextqa", long, "D"), Verdict::Scored(true));
        let blank = vec![String::new(); 4];
        let mut rng = SplitMix64::new(1);
        let right = (0..40)
            .filter(|_| judge("lmms_eval_v0.4_nextqa", long, "D", &blank, &mut rng).unwrap() == Verdict::Scored(true))
            .count();
        assert!(right > 0 && right < 40, "random fallback expected, got {right}/40 right");
    }
}
