//! Choosing the next token: greedy, or temperature + nucleus (top-p) sampling from a seeded generator, as
//! transformers' `generate(do_sample=True, temperature=T, top_p=P)` does (logits / T, softmax, keep the smallest set
//! of most likely tokens whose probability reaches P, renormalise, draw); and stop strings.
//!
//! Cost per step: one softmax over the vocabulary and a partial sort of the candidates, O(V log V) at worst, on the CPU
//! copy of the last logits row (150k floats for Qwen2, negligible next to a decoder step).

#[cfg(feature = "torch")]
use tch::Tensor;
use tokensieve_pruners::primitives::SplitMix64;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (argmax); otherwise the logits are divided by it before the softmax.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 keeps every token.
    pub top_p: f64,
    /// Seed of the draws: the same seed, prompt and model give the same answer.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

impl Sampling {
    /// Checks the ranges; the message names the offending value.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature {} must be >= 0 (0 is greedy)", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p {} must be in (0, 1]", self.top_p));
        }
        Ok(())
    }
}

/// Picks tokens one step at a time under a [`Sampling`] setting.
pub struct TokenPicker {
    sampling: Sampling,
    rng: SplitMix64,
}

impl TokenPicker {
    /// A picker whose draws start from `sampling.seed`.
    pub fn new(sampling: Sampling) -> Self {
        TokenPicker { sampling, rng: SplitMix64::new(sampling.seed) }
    }

    /// The next token from the last position's logits (`[V]` or `[1, V]`, any device).
    #[cfg(feature = "torch")]
    pub fn next(&mut self, logits: &Tensor) -> Result<i64, tch::TchError> {
        if self.sampling.temperature == 0.0 {
            return logits.f_reshape([-1])?.f_argmax(0, false)?.f_int64_value(&[]);
        }
        let row: Vec<f32> = Vec::try_from(logits.f_reshape([-1])?.f_to_kind(tch::Kind::Float)?)?;
        Ok(self.pick(&row) as i64)
    }

    /// The next token from a CPU logits row: the argmax when greedy, else a draw.
    pub fn pick_or_argmax(&mut self, logits: &[f32]) -> usize {
        if self.sampling.temperature == 0.0 {
            // The first maximum, as torch's argmax returns.
            let mut best = 0;
            for (i, &l) in logits.iter().enumerate() {
                if l > logits[best] {
                    best = i;
                }
            }
            return best;
        }
        self.pick(logits)
    }

    /// The draw on a CPU logits row.
    pub fn pick(&mut self, logits: &[f32]) -> usize {
        let t = self.sampling.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(usize, f64)> =
            logits.iter().enumerate().map(|(i, &l)| (i, ((l as f64 - max) / t).exp())).collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        // Most likely first; ties by index, so the order (and the draw) is reproducible.
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0;
        let mut mass = 0.0;
        for (_, p) in &probs {
            mass += p / total;
            kept += 1;
            if mass >= self.sampling.top_p {
                break;
            }
        }
        let nucleus = &probs[..kept.max(1)];
        let sum: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut r = self.rng.unit() * sum;
        for &(i, p) in nucleus {
            if r < p {
                return i;
            }
            r -= p;
        }
        nucleus[nucleus.len() - 1].0
    }
}

/// What [`generate_text`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The answer, cut before a stop string.
    pub answer: String,
    /// Tokens generated (the stop string's tokens included, end-of-sequence excluded).
    pub tokens: usize,
    /// Decoder steps run after the prefill.
    pub steps: usize,
}

/// Incremental detokenisation: text-generation-inference's `decode_token` scheme (transformers' `TextStreamer`
/// does the same with one offset). Each step decodes two short windows of the generated ids, `prefix..read` and
/// `prefix..`, and emits what the second adds: the window starts one piece back so tokenizers that drop a leading
/// space (SentencePiece's `▁`) or merge bytes see their context, and a piece that ends inside a UTF-8 character
/// (U+FFFD) waits for the next token. A step costs O(piece) instead of decoding the whole answer again (O(answer)).
#[derive(Debug, Default, Clone, Copy)]
pub struct Detokenizer {
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    /// The text that `ids` (every id generated so far) adds since the last piece, or `None` while it is incomplete.
    pub fn next_piece(
        &mut self,
        tokenizer: &crate::tokenizer::TextTokenizer,
        ids: &[u32],
    ) -> Result<Option<String>, crate::tokenizer::TokenizerError> {
        let before = tokenizer.decode(&ids[self.prefix..self.read])?;
        let after = tokenizer.decode(&ids[self.prefix..])?;
        if after.len() <= before.len() || after.ends_with('\u{FFFD}') || !after.is_char_boundary(before.len()) {
            return Ok(None);
        }
        (self.prefix, self.read) = (self.read, ids.len());
        Ok(Some(after[before.len()..].to_string()))
    }
}

/// The text-generation loop every model path shares: from the first picked token `first`, `step(token)` runs one
/// decoder step on the token and picks the next. Stops at the tokenizer's end-of-sequence tokens, after `max_new`
/// tokens (without a step whose token nobody would read), before the first of `stops` (only text before it is ever
/// shown), or when `on_text` returns `false`. `on_text` gets each new piece of visible text: tokens can split
/// characters, so a piece is what the new token adds to the decoded answer ([`Detokenizer`]). Stop strings are looked
/// for only where the new piece could complete one, and text that could begin one is held back until the next piece
/// settles it (a stop string split over tokens never shows its first part). The answer is the whole decode, once,
/// cut before a stop string.
pub fn generate_text<E: From<crate::tokenizer::TokenizerError>>(
    tokenizer: &crate::tokenizer::TextTokenizer,
    max_new: usize,
    stops: &[String],
    first: i64,
    step: &mut dyn FnMut(i64) -> Result<i64, E>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generated, E> {
    let mut next = first;
    let mut generated = Vec::new();
    let mut detokenizer = Detokenizer::default();
    // The streamed text, and how much of it `on_text` has seen.
    let mut text = String::new();
    let mut shown = 0;
    let longest_stop = stops.iter().map(String::len).max().unwrap_or(0);
    let mut steps = 0;
    let (mut stopped, mut listening) = (false, true);
    let eos: Vec<i64> = tokenizer.eos.iter().map(|&t| t as i64).collect();
    while generated.len() < max_new && !eos.contains(&next) {
        generated.push(next as u32);
        let end = match detokenizer.next_piece(tokenizer, &generated)? {
            Some(piece) => {
                // A stop string completed by this piece starts at most `longest_stop - 1` bytes before it.
                let mut from = text.len().saturating_sub(longest_stop.saturating_sub(1));
                while !text.is_char_boundary(from) {
                    from -= 1;
                }
                text.push_str(&piece);
                stop_at(&text[from..], stops).map(|e| from + e)
            }
            None => None,
        };
        // Text that may be the start of a stop string is held back until the next piece settles it.
        let visible = end.unwrap_or_else(|| text.len() - partial_stop(&text, stops));
        if visible > shown {
            listening = on_text(&text[shown..visible]);
            shown = visible;
            if !listening {
                break;
            }
        }
        if end.is_some() {
            stopped = true;
            break;
        }
        if generated.len() == max_new {
            break;
        }
        next = step(next)?;
        steps += 1;
    }
    // Generation ended without a stop string: what was held back as a possible one is answer text after all.
    if !stopped && listening && shown < text.len() {
        on_text(&text[shown..]);
    }
    let mut answer = tokenizer.decode(&generated)?;
    if let Some(end) = stop_at(&answer, stops) {
        answer.truncate(end);
    }
    Ok(Generated { answer, tokens: generated.len(), steps })
}

/// The length of the longest end of `text` that is the beginning of a stop string (but not a whole one).
fn partial_stop(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).rev().filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
        .filter(|head| text.ends_with(head))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// Where the first stop string starts in `text`, if any.
pub fn stop_at(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_nucleus_and_seeds() {
        let logits = [0.0f32, 3.0, 2.9, -5.0];
        assert_eq!(TokenPicker::new(Sampling::default()).pick_or_argmax(&logits), 1);
        // top_p small enough keeps only the most likely token.
        let mut p = TokenPicker::new(Sampling { temperature: 1.0, top_p: 0.3, seed: 5 });
        assert!((0..50).all(|_| p.pick(&logits) == 1));
        // With the full distribution both likely tokens appear; token 3 (p ~ 1e-4) practically never does.
        let mut p = TokenPicker::new(Sampling { temperature: 1.0, top_p: 1.0, seed: 5 });
        let draws: Vec<usize> = (0..400).map(|_| p.pick(&logits)).collect();
        assert!(draws.contains(&1) && draws.contains(&2));
        let mut again = TokenPicker::new(Sampling { temperature: 1.0, top_p: 1.0, seed: 5 });
        assert_eq!(draws, (0..400).map(|_| again.pick(&logits)).collect::<Vec<_>>(), "same seed, same draws");
        // A low temperature sharpens towards the argmax.
        let mut cold = TokenPicker::new(Sampling { temperature: 0.01, top_p: 1.0, seed: 1 });
        assert!((0..50).all(|_| cold.pick(&logits) == 1));
        assert!(Sampling { temperature: -1.0, ..Sampling::default() }.validate().is_err());
        assert!(Sampling { top_p: 0.0, ..Sampling::default() }.validate().is_err());
    }

    #[test]
    fn stop_strings_cut_at_the_earliest() {
        let stops = vec!["\n\n".to_string(), "Question:".to_string(), String::new()];
        assert_eq!(stop_at("Paris.\n\nQuestion: next", &stops), Some(6));
        assert_eq!(stop_at("Paris.", &stops), None);
    }
}
