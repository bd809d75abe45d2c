//! The GGUF reader against llama.cpp's Python package (`gguf`) and the Llama decoder against transformers on the
//! real SmolLM2 weights. Fixtures: `fixtures/make_gguf_fixtures.py`.

use std::path::{Path, PathBuf};
use tokensieve_models::gguf::Gguf;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn every_tensor_type_dequantises_as_llama_cpp_does() {
    let g = Gguf::open(&fixture("quant_blocks.gguf")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quant_blocks.json")).unwrap()).unwrap();
    for (name, values) in expected.as_object().unwrap() {
        let (ours, shape) = g.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(shape, vec![2, 256], "{name}");
        let worst = ours
            .iter()
            .zip(values.as_array().unwrap())
            .map(|(a, b)| (*a as f64 - b.as_f64().unwrap()).abs())
            .fold(0f64, f64::max);
        assert!(worst <= 1e-6, "{name}: differs by {worst}");
    }
}

#[cfg(feature = "torch")]
#[test]
fn smollm2_logits_match_transformers_on_the_dequantised_weights() {
    use tokensieve_models::llama::{KvCache, Llama};
    use tokensieve_models::tokenizer::TextTokenizer;
    let assets = std::env::var_os("TOKENSIEVE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tokensieve/assets"));
    let path = assets.join("llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is missing: run `make setup`", path.display());
    let prompt = std::fs::read_to_string(fixture("smollm2_prompt.txt")).unwrap();
    let want_ids: Vec<u32> =
        serde_json::from_str(&std::fs::read_to_string(fixture("smollm2_ids.json")).unwrap()).unwrap();
    let tok = TextTokenizer::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
    assert_eq!(tok.encode(&prompt).unwrap(), want_ids, "tokenisation differs from transformers");
    let bytes = std::fs::read(fixture("smollm2_logits.npy")).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let want: Vec<f32> =
        bytes[10 + header..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let model = Llama::from_gguf(&path, tch::Device::Cpu).unwrap();
    let ids: Vec<i64> = want_ids.iter().map(|&t| t as i64).collect();
    let logits = model.forward(&tch::Tensor::from_slice(&ids).unsqueeze(0), &mut KvCache::default()).unwrap();
    let ours: Vec<f32> = Vec::try_from(logits.reshape([-1])).unwrap();
    assert_eq!(ours.len(), want.len());
    let worst = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("SmolLM2 logits: max abs difference {worst:e} over {} entries", want.len());
    // f32 rounding over 30 layers, relative to the logits' scale (docs/CLI.md states this bound): 4.0e-5 and 6.4e-5
    // measured on two CPUs (libtorch picks its kernels per CPU), with logits up to 31 in magnitude.
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(worst <= 1e-5 * scale, "logits differ by {worst} (bound {})", 1e-5 * scale);
}
