//! Chat templates: the Jinja template a checkpoint ships (`tokenizer_config.json`'s `chat_template`, or
//! `tokenizer.chat_template` in GGUF), rendered with minijinja as transformers renders it (trim_blocks and
//! lstrip_blocks on, `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`).

use minijinja::syntax::SyntaxConfig;
use minijinja::{context, Environment, Error, ErrorKind};
use serde_json::Value;

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the special tokens' texts the template may use.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_syntax(SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build()?);
        env.add_function("raise_exception", |message: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        // Python's `[::-1]` is not Jinja; transformers templates use it for reversed loops.
        env.add_template_owned("chat", source.replace("[::-1]", "|reverse"))?;
        Ok(ChatTemplate { env, bos: bos.to_string(), eos: eos.to_string() })
    }

    /// The template of a Hugging Face model folder: `tokenizer_config.json`'s `chat_template` with its `bos_token` and
    /// `eos_token` texts (plain strings or `{"content": ...}`); `Ok(None)` when the folder has no template. The error
    /// names the file.
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Option<Self>, String> {
        let path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let config: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(source) = config["chat_template"].as_str() else { return Ok(None) };
        let special = |key: &str| match &config[key] {
            Value::String(s) => s.clone(),
            v => v["content"].as_str().unwrap_or_default().to_string(),
        };
        ChatTemplate::new(source, &special("bos_token"), &special("eos_token"))
            .map(Some)
            .map_err(|e| format!("{}: chat_template: {e}", path.display()))
    }

    /// Renders `messages` (`[{"role", "content"}]`), ending with the assistant prompt when asked.
    pub fn render(&self, messages: &Value, add_generation_prompt: bool) -> Result<String, Error> {
        self.env.get_template("chat")?.render(context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_chatml_template() {
        let src = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe brief<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = ChatTemplate::new(src, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&serde_json::json!([{"role": "user", "content": "Hi"}]), true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let failing = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        assert!(failing.render(&serde_json::json!([]), false).is_err());
    }
}
