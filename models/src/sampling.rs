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

/// The text-generation loop every model path shares: from the first picked token `first`, `step(token)` runs one
/// decoder step on the token and picks the next. Stops at the tokenizer's end-of-sequence tokens, after `max_new`
/// tokens (without a step whose token nobody would read), before the first of `stops` (only text before it is ever
/// shown), or when `on_text` returns `false`. `on_text` gets each new piece of visible text: tokens can split
/// characters, so a piece is what the new token adds to the decoded answer.
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
    let mut shown = String::new();
    let mut cut = None;
    let mut steps = 0;
    let eos: Vec<i64> = tokenizer.eos.iter().map(|&t| t as i64).collect();
    while generated.len() < max_new && !eos.contains(&next) {
        generated.push(next as u32);
        let text = tokenizer.decode(&generated)?;
        let end = stop_at(&text, stops);
        let visible = &text[..end.unwrap_or(text.len())];
        if let Some(delta) = visible.strip_prefix(shown.as_str()).filter(|d| !d.is_empty()) {
            if !on_text(delta) {
                break;
            }
            shown = visible.to_string();
        }
        if end.is_some() {
            cut = end;
            break;
        }
        if generated.len() == max_new {
            break;
        }
        next = step(next)?;
        steps += 1;
    }
    let mut answer = tokenizer.decode(&generated)?;
    if let Some(end) = cut {
        answer.truncate(end);
    }
    Ok(Generated { answer, tokens: generated.len(), steps })
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
