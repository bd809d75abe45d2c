//! Multiple-choice answer extractors, named and versioned, because the harnesses disagree (EVAL.md §5): the same
//! reply can be right under one rule, wrong under another, or left out of the average. Each extractor maps a raw
//! reply to a letter (or nothing) and says how "nothing" counts.
//!
//! | name | rule | nothing counts as |
//! |---|---|---|
//! | `videomme_official` | strip the answer prefixes (with the original list's two missing commas); more than 10 words without `[ABCD]` -> nothing; else the first `[ABCD]` | excluded |
//! | `lmms_eval_le0.4_videomme` | the same with the first six prefixes only | wrong |
//! | `lmms_eval_2026_priority` | prioritised candidates (leading letter 10, trailing 9, after "the answer is" 7, `(X)` 6, `X.` 5, `X:` 4, `X)` 3, `X ` 2; any occurrence 0), the highest priority, then the last position | wrong |
//! | `lmms_eval_v0.4_longvideobench` | the full prefix list; over 10 words without `[ABCDE]` or no match -> a seeded random option | a random option |
//! | `lmms_eval_v0.4_mvbench` | punctuation to spaces, the first standalone `[A-E]` | skipped |
//! | `mlvu_official` | the character before the first `)`, else the whole stripped reply, equal to the letter inside `(X)` of the answer | wrong |
//! | `mvbench_official` | lower-cased first token (dots removed) a substring of the answer's first token, or the reverse | wrong |
//! | `langdc_mvbench` | lower-cased second space-separated token against the answer's first token, as `mvbench_official` | wrong |
//! | `sfllava_mcq` | a leading `[a-eA-E]`; else after "answer is", the first of `A:`/`A)` .. `E:`/`E)` present | wrong |
//! | `lmms_eval_v0.4_egoschema` | MMMU's parser: `(X)`, else `X `, else `X.`, else (over 5 words) an option's text; several -> the one whose last occurrence is earliest; none -> a seeded random option | a random option |
//! | `lmms_eval_v0.4_nextqa` | the same parser, several -> the one whose last occurrence is latest | a random option |
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

/// LongVideoBench's copy, commas fixed.
const LONGVIDEOBENCH_PREFIXES: [&str; 12] = [
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
    "Answer:",
    "Option:",
    "The correct answer",
    "The correct option",
];

/// What an extractor made of one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted, right or wrong.
    Scored(bool),
    /// Left out of numerator and denominator.
    Excluded,
}

fn first_of(s: &str, letters: &str) -> Option<char> {
    s.chars().find(|c| letters.contains(*c))
}

fn strip_prefixes(reply: &str, prefixes: &[&str]) -> String {
    let mut s = reply.trim().to_string();
    for p in prefixes {
        s = s.replace(p, "");
    }
    s
}

fn videomme(reply: &str, prefixes: &[&str]) -> Option<char> {
    let s = strip_prefixes(reply, prefixes);
    if s.split_whitespace().count() > 10 && first_of(&s, "ABCD").is_none() {
        return None;
    }
    first_of(&s, "ABCD")
}

fn priority(reply: &str, letters: &[char]) -> Option<char> {
    let trimmed = reply.trim().trim_matches(|c: char| ",.!?;:'\"".contains(c) || c.is_whitespace());
    let s: Vec<char> = format!(" {trimmed} ").chars().collect();
    let lower: String = s.iter().collect::<String>().to_lowercase();
    let is_letter = |c: char| letters.contains(&c);
    let standalone = |i: usize| i > 0 && i + 1 < s.len() && !s[i - 1].is_alphanumeric() && !s[i + 1].is_alphanumeric();
    let mut candidates: Vec<(u8, usize, char)> = Vec::new();
    let mut consider = |p: u8, pos: usize, c: char| candidates.push((p, pos, c));
    let n = s.len();
    for i in 1..n.saturating_sub(1) {
        let c = s[i];
        if !is_letter(c) || !standalone(i) {
            continue;
        }
        if i == 1 {
            consider(10, i, c);
        }
        if i == n - 2 {
            consider(9, i, c);
        }
        let before: String = lower.chars().take(i).collect();
        let before = before.trim_end_matches(|ch: char| ch.is_whitespace() || ch == ':' || ch == '(');
        if ["the answer is", "answer is", "best option is", "the best answer is", "correct answer is", "答案是"]
            .iter()
            .any(|p| before.ends_with(p))
        {
            consider(7, i, c);
        }
        match (s[i - 1], s[i + 1]) {
            ('(', ')') => consider(6, i, c),
            (_, '.') => consider(5, i, c),
            (_, ':') => consider(4, i, c),
            (_, ')') => consider(3, i, c),
            (_, ' ') => consider(2, i, c),
            _ => {}
        }
    }
    if candidates.is_empty() {
        candidates.extend(s.iter().enumerate().filter(|(_, c)| is_letter(**c)).map(|(i, &c)| (0, i, c)));
    }
    // The highest priority wins; among equals, the last position.
    let best = candidates.into_iter().max_by_key(|&(p, pos, _)| (p, pos));
    best.map(|(_, _, c)| c)
}

/// MMMU's `parse_multi_choice_response`, which lmms-eval copies into its EgoSchema and NExT-QA tasks; the copies
/// differ only in which of several candidates wins (`earliest`: the smallest last position, else the largest).
fn mmmu(reply: &str, letters: &[char], texts: &[String], earliest: bool, rng: &mut SplitMix64) -> char {
    let mut r = reply;
    // Python strips each character in turn, not the set at once.
    for c in [',', '.', '!', '?', ';', ':', '\''] {
        r = r.trim_matches(c);
    }
    let response = format!(" {r} ");
    let lower = response.to_lowercase();
    let mut with_brackets = false;
    let mut by_letter = true;
    let mut candidates: Vec<char> = letters.iter().copied().filter(|l| response.contains(&format!("({l})"))).collect();
    if !candidates.is_empty() {
        with_brackets = true;
    } else {
        candidates = letters.iter().copied().filter(|l| response.contains(&format!("{l} "))).collect();
    }
    if candidates.is_empty() {
        candidates = letters.iter().copied().filter(|l| response.contains(&format!("{l}."))).collect();
    }
    if candidates.is_empty() && response.split_whitespace().count() > 5 {
        candidates = letters
            .iter()
            .zip(texts)
            .filter(|(_, t)| !t.trim().is_empty() && lower.contains(&t.to_lowercase()))
            .map(|(l, _)| *l)
            .collect();
        by_letter = false;
    }
    match candidates.len() {
        0 => letters[rng.below(letters.len())],
        1 => candidates[0],
        _ => {
            // Python's rfind: -1 when absent; numpy's argmax/argmin keep the first of equals.
            let position = |l: char| -> i64 {
                let found = if !by_letter {
                    let i = letters.iter().position(|&x| x == l).unwrap_or(0);
                    lower.rfind(&texts[i].to_lowercase())
                } else if with_brackets {
                    response.rfind(&format!("({l})"))
                } else {
                    response.rfind(&format!(" {l} "))
                };
                found.map_or(-1, |p| response[..p].chars().count() as i64)
            };
            let mut best = candidates[0];
            let mut best_at = position(best);
            for &c in &candidates[1..] {
                let at = position(c);
                if (earliest && at < best_at) || (!earliest && at > best_at) {
                    best = c;
                    best_at = at;
                }
            }
            best
        }
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

/// Judges one reply against the answer (a letter, or `(X) text` for the MVBench and MLVU rules).
/// `options` are the choices' texts (their number bounds the letters and the random fallbacks; the MMMU-style
/// extractors also match the texts, and skip empty ones); `rng` seeds the random fallbacks.
pub fn judge(
    extractor: &str,
    reply: &str,
    answer: &str,
    options: &[String],
    rng: &mut SplitMix64,
) -> Result<Verdict, String> {
    let letters: Vec<char> = ('A'..='Z').take(options.len().clamp(1, 26)).collect();
    let truth = answer_letter(answer).to_uppercase();
    let is = |c: Option<char>| c.is_some_and(|c| c.to_string() == truth);
    Ok(match extractor {
        "videomme_official" => match videomme(reply, &VIDEOMME_PREFIXES) {
            None => Verdict::Excluded,
            c => Verdict::Scored(is(c)),
        },
        "lmms_eval_le0.4_videomme" => Verdict::Scored(is(videomme(reply, &VIDEOMME_PREFIXES[..6]))),
        "lmms_eval_2026_priority" => Verdict::Scored(is(priority(reply, &letters))),
        "lmms_eval_v0.4_longvideobench" => {
            let s = strip_prefixes(reply, &LONGVIDEOBENCH_PREFIXES);
            let found = first_of(&s, "ABCDE");
            // Over ten words without a letter, or no letter at all: a random option, as the reference does.
            let pick = found.or_else(|| Some(letters[rng.below(letters.len())]));
            Verdict::Scored(is(pick))
        }
        "lmms_eval_v0.4_mvbench" => {
            let s: String = reply.chars().map(|c| if c.is_ascii_punctuation() { ' ' } else { c }).collect();
            match s.split_whitespace().find(|w| w.len() == 1 && "ABCDE".contains(*w)) {
                None if reply.trim().is_empty() => Verdict::Excluded,
                w => Verdict::Scored(is(w.and_then(|w| w.chars().next()))),
            }
        }
        "mlvu_official" => {
            let r = reply.trim();
            let pred = match r.find(')') {
                Some(i) if i > 0 => r[..i].chars().last().map(|c| c.to_string()).unwrap_or_default(),
                _ => r.to_string(),
            };
            Verdict::Scored(pred.to_uppercase() == truth)
        }
        "mvbench_official" | "langdc_mvbench" => {
            let lower = reply.to_lowercase();
            let token = if extractor == "mvbench_official" {
                lower.split_whitespace().next().unwrap_or("").to_string()
            } else {
                lower.split(' ').nth(1).unwrap_or("").to_string()
            };
            let gt = answer.to_lowercase().split_whitespace().next().unwrap_or("").to_string();
            let pred = token.replace('.', "");
            Verdict::Scored(if extractor == "langdc_mvbench" {
                !pred.is_empty() && (gt.contains(&pred) || pred.contains(&gt))
            } else {
                gt.contains(&pred) || token.contains(&gt)
            })
        }
        "sfllava_mcq" => {
            let first = reply.chars().next();
            let pick = if first.is_some_and(|c| "abcdeABCDE".contains(c)) {
                first.map(|c| c.to_ascii_uppercase())
            } else {
                let tail = reply.split("answer is").last().unwrap_or(reply);
                "ABCDE".chars().find(|l| tail.contains(&format!("{l}:")) || tail.contains(&format!("{l})")))
            };
            Verdict::Scored(is(pick))
        }
        "lmms_eval_v0.4_egoschema" | "lmms_eval_v0.4_nextqa" => {
            let earliest = extractor == "lmms_eval_v0.4_egoschema";
            Verdict::Scored(is(Some(mmmu(reply, &letters, options, earliest, rng))))
        }
        other => return Err(format!("unknown extractor `{other}` (known: {})", EXTRACTORS.join(", "))),
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
    fn mmmu_style_parsers_differ_only_in_which_candidate_wins() {
        for e in ["lmms_eval_v0.4_egoschema", "lmms_eval_v0.4_nextqa"] {
            assert_eq!(j(e, "(B)", "B"), Verdict::Scored(true));
            assert_eq!(j(e, "C.", "C"), Verdict::Scored(true), "trailing dot stripped, then `C ` matches");
            assert_eq!(j(e, "The video shows two dogs playing in a yard", "C"), Verdict::Scored(true));
            // Brackets outrank bare letters.
            assert_eq!(j(e, "A or maybe (D)", "D"), Verdict::Scored(true));
        }
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
