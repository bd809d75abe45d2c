//! Llama and Qwen2 decoders from Hugging Face directories against transformers on tiny random checkpoints
//! (`fixtures/make_decoder_fixtures.py`): the prefill's last-position logits, then cached decoding one token at a
//! time, within 1e-4 at every position.

#![cfg(feature = "torch")]

use std::path::Path;
use tch::{Device, Tensor};
use tokensieve_models::llama::{KvCache, Llama};
use tokensieve_models::safetensors::Safetensors;

fn check(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let model = Llama::from_hf_dir(&dir, Device::Cpu).unwrap();
    let reference = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let ids: Vec<i64> = reference.tensor_f32("input_ids").unwrap().0.iter().map(|&v| v as i64).collect();
    let (logits, shape) = reference.tensor_f32("logits").unwrap();
    let vocab = shape[1];
    let prefill = 6;
    let mut cache = KvCache::default();
    let mut out = model.forward(&Tensor::from_slice(&ids[..prefill]).unsqueeze(0), &mut cache).unwrap();
    for pos in prefill - 1..ids.len() {
        let ours: Vec<f32> = Vec::try_from(out.reshape([-1])).unwrap();
        let want = &logits[pos * vocab..(pos + 1) * vocab];
        let d = ours.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d <= 1e-4, "{name}: position {pos} differs by {d}");
        if pos + 1 < ids.len() {
            out = model.forward(&Tensor::from_slice(&ids[pos + 1..pos + 2]).unsqueeze(0), &mut cache).unwrap();
        }
    }
    assert_eq!(cache.len(), ids.len() as i64, "every token is in the cache");
}

#[test]
fn tiny_llama_matches_transformers_with_and_without_the_cache() {
    check("tiny_llama");
}

#[test]
fn tiny_qwen2_matches_transformers_with_and_without_the_cache() {
    check("tiny_qwen2");
}
