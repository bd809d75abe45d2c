//! LLM judges as pluggable commands (EVAL.md §4.5): the prompt goes to the command's standard input, the score is
//! the first number on its standard output. tokensieve never invents a judge score: without a judge, the parts that
//! need one are reported as not scored.

use std::io::Write;
use std::process::{Command, Stdio};

/// Scores an answer with an external judge.
pub trait Judge {
    /// The judge's score for `prompt`, or why there is none.
    fn score(&self, prompt: &str) -> Result<f64, String>;
}

/// A shell command acting as judge (`sh -c COMMAND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandJudge {
    /// The command line.
    pub command: String,
}

impl Judge for CommandJudge {
    fn score(&self, prompt: &str) -> Result<f64, String> {
        let mut child = Command::new("sh")
            .args(["-c", &self.command])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("judge `{}`: {e}", self.command))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A judge may answer without reading its whole input; its closed pipe is not an error.
            match stdin.write_all(prompt.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(format!("judge `{}`: {e}", self.command))
                }
                _ => {}
            }
        }
        let out = child.wait_with_output().map_err(|e| format!("judge `{}`: {e}", self.command))?;
        if !out.status.success() {
            return Err(format!("judge `{}` exited with {}", self.command, out.status));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        first_number(&text)
            .ok_or_else(|| format!("judge `{}` replied without a number: {:?}", self.command, text.trim()))
    }
}

/// The first decimal number in `text`, with its sign (Lingo-Judge replies with a logit, often negative).
pub fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let end = text[start..].find(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(text.len(), |e| start + e);
    let value: f64 = text[start..end].trim_end_matches('.').parse().ok()?;
    Some(if text[..start].ends_with('-') { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_sign() {
        assert_eq!(first_number("Score: 62"), Some(62.0));
        assert_eq!(first_number("logit -1.25\n"), Some(-1.25));
        assert_eq!(first_number("78."), Some(78.0));
        assert_eq!(first_number("none"), None);
    }
}
