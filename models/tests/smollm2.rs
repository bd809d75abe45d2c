//! The real SmolLM2-135M-Instruct GGUF from the setup cache (fails loudly when `make setup` has not run).

use std::path::PathBuf;
use tokensieve_models::chat_template::ChatTemplate;
use tokensieve_models::gguf::Gguf;
use tokensieve_models::tokenizer::TextTokenizer;

fn gguf_path() -> PathBuf {
    let root = std::env::var_os("TOKENSIEVE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tokensieve/assets"));
    let path = root.join("llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is missing: run `make setup`", path.display());
    path
}

#[test]
fn metadata_tokenizer_and_template_come_from_the_file() {
    let g = Gguf::open(&gguf_path()).unwrap();
    assert_eq!(g.meta("general.architecture").unwrap().as_str(), Some("llama"));
    assert_eq!(g.meta_int("llama.block_count").unwrap(), 30);
    assert_eq!(g.meta_int("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.tensors.len(), 272);
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    assert_eq!((tok.bos, tok.eos.clone()), (Some(1), vec![2]));
    let ids = tok.encode("<|im_start|>user\nWhat is 12 plus 7?<|im_end|>").unwrap();
    assert_eq!(ids[0], 1, "the control token is matched whole");
    assert_eq!(tok.decode(&ids).unwrap(), "user\nWhat is 12 plus 7?");
    let template = g.meta("tokenizer.chat_template").unwrap().as_str().unwrap().to_string();
    let prompt = ChatTemplate::new(&template, "<|im_start|>", "<|im_end|>")
        .unwrap()
        .render(&serde_json::json!([{"role": "user", "content": "Hello"}]), true)
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"), "{prompt:?}");
}

#[cfg(feature = "torch")]
#[test]
fn answers_the_capital_of_france() {
    use tokensieve_models::llama::Llama;
    let path = gguf_path();
    let g = Gguf::open(&path).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    let template = g.meta("tokenizer.chat_template").unwrap().as_str().unwrap().to_string();
    let prompt = ChatTemplate::new(&template, "<|im_start|>", "<|im_end|>")
        .unwrap()
        .render(&serde_json::json!([{"role": "user", "content": "What is the capital of France?"}]), true)
        .unwrap();
    let device = tch::Device::cuda_if_available();
    eprintln!("SmolLM2 on {device:?}");
    let model = Llama::from_gguf(&path, device).unwrap();
    let out = model.generate_greedy(&tok.encode(&prompt).unwrap(), 20, &tok.eos).unwrap();
    let answer = tok.decode(&out).unwrap();
    eprintln!("answer: {answer:?}");
    assert!(answer.contains("Paris"), "answer: {answer:?}");
}

/// Left-padded batches give every row the answer it gets alone: three chat prompts of different lengths, greedy, 12
/// tokens, and the first-step logits within float rounding.
#[cfg(feature = "torch")]
#[test]
fn left_padded_batches_answer_like_single_prompts() {
    use tch::{Device, Tensor};
    use tokensieve_models::llama::{KvCache, Llama};
    use tokensieve_models::sampling::{Sampling, TokenPicker};
    let path = gguf_path();
    let g = Gguf::open(&path).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    let model = Llama::from_gguf(&path, Device::Cpu).unwrap();
    let prompts: Vec<Vec<u32>> = ["What is the capital of France?", "Name a color.", "Count from one to five, please."]
        .iter()
        .map(|q| tok.encode(&format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")).unwrap())
        .collect();
    assert!(prompts[0].len() != prompts[1].len(), "the prompts need padding");
    let mut greedy = TokenPicker::new(Sampling::default());
    let batch = model.generate_batch(&prompts, 12, &tok.eos, &mut greedy).unwrap();
    for (p, got) in prompts.iter().zip(&batch) {
        let alone = model.generate_greedy(p, 12, &tok.eos).unwrap();
        assert_eq!(got, &alone, "{:?}", tok.decode(p).unwrap());
    }
    // The padded prefill's last-position logits equal each prompt's own.
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut valid = Vec::new();
    for p in &prompts {
        ids.extend(std::iter::repeat_n(0i64, longest - p.len()).chain(p.iter().map(|&t| t as i64)));
        valid.extend(std::iter::repeat_n(false, longest - p.len()).chain(std::iter::repeat_n(true, p.len())));
    }
    let shape = [prompts.len() as i64, longest as i64];
    let mut cache = KvCache::default();
    let logits = model
        .forward_batch(&Tensor::from_slice(&ids).reshape(shape), &Tensor::from_slice(&valid).reshape(shape), &mut cache)
        .unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let ids: Vec<i64> = p.iter().map(|&t| t as i64).collect();
        let alone = model.forward(&Tensor::from_slice(&ids).unsqueeze(0), &mut KvCache::default()).unwrap();
        let d = (logits.get(r as i64) - alone.reshape([-1])).abs().max().double_value(&[]);
        assert!(d < 1e-3, "row {r}: {d}");
    }
    // A batched cache refuses an unbatched step.
    assert!(model.forward(&Tensor::from_slice(&[1i64]).unsqueeze(0), &mut cache).is_err());
}

/// The incremental detokeniser emits exactly the whole decode, piece by piece, on text with multi-byte characters
/// split across byte-level tokens (accents, CJK, emoji); and the generation loop streams only text before a stop
/// string that spans several pieces, with the answer cut at the same place.
#[test]
fn streamed_pieces_are_the_whole_decode() {
    use tokensieve_models::sampling::{generate_text, Detokenizer};
    use tokensieve_models::tokenizer::TokenizerError;
    let g = Gguf::open(&gguf_path()).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    let text = "Grüße aus Köln: 東京タワー 🚀🎉 and  two  spaces,\nnew lines\tand tabs. Ünïcödé!";
    let ids = tok.encode(text).unwrap();
    let mut detok = Detokenizer::default();
    let mut streamed = String::new();
    let mut waits = 0;
    for end in 1..=ids.len() {
        match detok.next_piece(&tok, &ids[..end]).unwrap() {
            Some(piece) => streamed.push_str(&piece),
            None => waits += 1,
        }
    }
    assert_eq!(streamed, tok.decode(&ids).unwrap());
    assert!(waits > 0, "some token ends inside a character, so the detokeniser had to wait");

    let answer = "Köln 東京 🚀 then STOP and more";
    let ids = tok.encode(answer).unwrap();
    let stop = ["ST".to_string(), "OP".to_string()].concat();
    assert!(ids.len() > 6, "the stop string is reached after several pieces");
    let mut at = 0;
    let mut step = |_: i64| -> Result<i64, TokenizerError> {
        at += 1;
        Ok(ids[at] as i64)
    };
    let mut pieces = Vec::new();
    let out = generate_text(&tok, 100, &[stop], ids[0] as i64, &mut step, &mut |p: &str| {
        pieces.push(p.to_string());
        true
    })
    .unwrap();
    assert_eq!(out.answer, "Köln 東京 🚀 then ");
    assert_eq!(pieces.concat(), out.answer, "only text before the stop string is streamed");
    assert!(pieces.len() > 3);

    // A possible stop string that never completes is held back, then shown: at the end of the generation too.
    let ids = tok.encode("Köln then STOP").unwrap();
    let mut at = 0;
    let mut step = |_: i64| -> Result<i64, TokenizerError> {
        at += 1;
        Ok(ids[at] as i64)
    };
    let mut pieces = Vec::new();
    let longer = ["STOP", "PER"].concat();
    let out = generate_text(&tok, ids.len(), &[longer], ids[0] as i64, &mut step, &mut |p: &str| {
        pieces.push(p.to_string());
        true
    })
    .unwrap();
    assert_eq!(out.answer, "Köln then STOP");
    assert_eq!(pieces.concat(), out.answer, "held-back text is streamed once generation ends");
}
