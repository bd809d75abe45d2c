//! The CLIP vision tower against transformers on a tiny random checkpoint (`fixtures/make_vision_fixtures.py`):
//! every hidden state, the pooled output, the last layer's CLS attention (averaged over heads) within 1e-5.

#![cfg(feature = "torch")]

use std::path::Path;
use tch::{Device, Tensor};
use tokensieve_models::clip::ClipVision;
use tokensieve_models::safetensors::Safetensors;

fn max_diff(a: &Tensor, b: &[f32]) -> f32 {
    let a: Vec<f32> = Vec::try_from(a.reshape([-1])).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tiny_clip_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip");
    let tower = ClipVision::load(&dir, Device::Cpu).unwrap();
    let reference = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let (pixels, shape) = reference.tensor_f32("pixel_values").unwrap();
    let dims: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
    let out = tower.forward(&Tensor::from_slice(&pixels).reshape(dims.as_slice())).unwrap();
    assert_eq!(out.hidden_states.len(), 3);
    for (i, h) in out.hidden_states.iter().enumerate() {
        let (want, _) = reference.tensor_f32(&format!("hidden_states.{i}")).unwrap();
        let d = max_diff(h, &want);
        assert!(d <= 1e-5, "hidden state {i} differs by {d}");
    }
    let (pooled, _) = reference.tensor_f32("pooled").unwrap();
    assert!(max_diff(&out.pooled, &pooled) <= 1e-5);
    // transformers' last-layer attention [B, H, 1+N, 1+N]: the CLS row's patch columns, averaged over heads.
    let (attn, shape) = reference.tensor_f32("last_attention").unwrap();
    let attn = Tensor::from_slice(&attn).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice());
    let want: Vec<f32> = Vec::try_from(
        attn.select(2, 0).mean_dim([1i64].as_slice(), false, tch::Kind::Float).narrow(1, 1, 16).reshape([-1]),
    )
    .unwrap();
    let d = max_diff(&out.cls_attention, &want);
    assert!(d <= 1e-6, "CLS attention differs by {d}");
    assert_eq!(out.keys.size(), vec![2, 17, 8]);
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let dir = tempfile_dir();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_clip");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 65");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = ClipVision::load(&dir, Device::Cpu).err().expect("a shape error");
    assert!(err.to_string().contains("encoder.layers.0.mlp.fc1.weight"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tokensieve-clip-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
