//! A tiny random LLaVA (CLIP + mlp2x_gelu + Llama) against transformers (`fixtures/make_llava_fixtures.py`): the
//! logits after the image prompt's prefill and while decoding the rest of the prompt from the cache, within 1e-4.

#![cfg(feature = "torch")]

use std::path::Path;
use tch::{Device, Tensor};
use tokensieve_models::llama::KvCache;
use tokensieve_models::llava::{Llava, LlavaError};
use tokensieve_models::safetensors::Safetensors;

#[test]
fn tiny_llava_matches_transformers() {
    for device in tokensieve_models::runtime::compute_devices_reported() {
        llava_on(device);
    }
}

fn llava_on(device: Device) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llava");
    let model = Llava::load(&dir, device).unwrap();
    let reference = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let ids: Vec<i64> = reference.tensor_f32("input_ids").unwrap().0.iter().map(|&v| v as i64).collect();
    let (pixels, shape) = reference.tensor_f32("pixel_values").unwrap();
    let pixels = Tensor::from_slice(&pixels)
        .reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice())
        .to_device(device);
    let (logits, lshape) = reference.tensor_f32("logits").unwrap();
    let vocab = lshape[1];
    let prefill = 20; // 3 text tokens, 16 image tokens, 1 text token
    let mut cache = KvCache::default();
    let on = |t: &[i64]| Tensor::from_slice(t).unsqueeze(0).to_device(device);
    let mut out = model.forward(&on(&ids[..prefill]), &pixels, &mut cache).unwrap();
    for pos in prefill - 1..ids.len() {
        let ours: Vec<f32> = Vec::try_from(out.reshape([-1]).to_device(Device::Cpu)).unwrap();
        let d =
            ours.iter().zip(&logits[pos * vocab..(pos + 1) * vocab]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d <= 1e-4, "position {pos} differs by {d}");
        if pos + 1 < ids.len() {
            out = model.text.forward(&on(&ids[pos + 1..pos + 2]), &mut cache).unwrap();
        }
    }
    // Fewer placeholders than visual tokens is a typed error, as in transformers.
    let err = model.forward(&on(&ids[..10]), &pixels, &mut KvCache::default()).err();
    assert!(matches!(err, Some(LlavaError::Placeholders { placeholders: 7, features: 16, .. })), "{err:?}");
}

#[test]
fn tiny_llava_matches_transformers_on_two_images_and_greedy_tokens() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llava");
    let model = Llava::load(&dir, Device::Cpu).unwrap();
    let reference = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let tensor = |name: &str| {
        let (v, shape) = reference.tensor_f32(name).unwrap();
        Tensor::from_slice(&v).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice())
    };
    let ids = |name: &str| -> Vec<i64> { reference.tensor_f32(name).unwrap().0.iter().map(|&v| v as i64).collect() };
    // Two images: each <image> run takes one image's 16 visual tokens, in order.
    let two = ids("two_ids");
    let (visual, _) = model.image_features(&tensor("two_pixels")).unwrap();
    let embeds = model.merge(&Tensor::from_slice(&two).unsqueeze(0), &visual.flatten(0, 1)).unwrap();
    let mut cache = KvCache::default();
    let ours = model.text.forward_embeds(embeds, &mut cache).unwrap().reshape([-1]);
    let theirs = tensor("two_logits").get(two.len() as i64 - 1);
    let d = (ours - theirs).abs().max().double_value(&[]);
    assert!(d <= 1e-4, "two-image prompt: last position differs by {d}");
    // 20 greedy tokens after the single-image prompt equal generate()'s.
    let prompt = ids("input_ids");
    let mut cache = KvCache::default();
    let mut next = model
        .forward(&Tensor::from_slice(&prompt).unsqueeze(0), &tensor("pixel_values"), &mut cache)
        .unwrap()
        .argmax(-1, false)
        .int64_value(&[0]);
    let mut greedy = Vec::new();
    for _ in 0..20 {
        greedy.push(next);
        next = model
            .text
            .forward(&Tensor::from_slice(&[next]).unsqueeze(0), &mut cache)
            .unwrap()
            .argmax(-1, false)
            .int64_value(&[0]);
    }
    assert_eq!(greedy, ids("greedy"));
}
