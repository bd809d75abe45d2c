//! CLIP and SigLIP towers against transformers on tiny random checkpoints (`fixtures/make_vision_fixtures.py`):
//! every hidden state, the pooled output and the attention signal over the patches within 1e-5.

#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tokensieve_models::safetensors::Safetensors;
use tokensieve_models::vision::{TowerKind, VisionTower};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn max_diff(a: &Tensor, b: &[f32]) -> f32 {
    let a: Vec<f32> = Vec::try_from(a.reshape([-1]).to_device(Device::Cpu)).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn tensor(st: &Safetensors, name: &str) -> Tensor {
    let (v, shape) = st.tensor_f32(name).unwrap();
    Tensor::from_slice(&v).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice())
}

fn check(dir: &str, kind: TowerKind, patches: i64) {
    for device in tokensieve_models::runtime::compute_devices_reported() {
        check_on(dir, kind, patches, device);
    }
}

fn check_on(dir: &str, kind: TowerKind, patches: i64, device: Device) {
    let dir = fixture(dir);
    let tower = VisionTower::load(&dir, device).unwrap();
    assert_eq!(tower.kind, kind);
    let reference = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let out = tower.forward(&tensor(&reference, "pixel_values").to_device(device)).unwrap();
    assert_eq!(out.hidden_states.len(), 3);
    for (i, h) in out.hidden_states.iter().enumerate() {
        let (want, _) = reference.tensor_f32(&format!("hidden_states.{i}")).unwrap();
        let d = max_diff(h, &want);
        assert!(d <= 1e-5, "{kind:?} hidden state {i} differs by {d}");
    }
    let (pooled, _) = reference.tensor_f32("pooled").unwrap();
    assert!(max_diff(out.pooled.as_ref().unwrap(), &pooled) <= 1e-5, "{kind:?} pooled output");
    let want = match kind {
        // transformers' last-layer attention [B, H, 1+N, 1+N]: the CLS row's patch columns, averaged over heads.
        TowerKind::Clip => tensor(&reference, "last_attention")
            .select(2, 0)
            .mean_dim([1i64].as_slice(), false, Kind::Float)
            .narrow(1, 1, patches),
        // PyTorch's MultiheadAttention weights of the probe, averaged over heads.
        TowerKind::Siglip => tensor(&reference, "probe_attention"),
    };
    let want: Vec<f32> = Vec::try_from(want.reshape([-1])).unwrap();
    let d = max_diff(out.cls_attention.as_ref().unwrap(), &want);
    assert!(d <= 1e-6, "{kind:?} attention signal differs by {d}");
}

#[test]
fn tiny_clip_matches_transformers() {
    check("tiny_clip", TowerKind::Clip, 16);
}

#[test]
fn tiny_siglip_matches_transformers() {
    check("tiny_siglip", TowerKind::Siglip, 16);
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let dir = std::env::temp_dir().join(format!("tokensieve-vision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("tiny_clip");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 65");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = VisionTower::load(&dir, Device::Cpu).err().expect("a shape error");
    assert!(err.to_string().contains("encoder.layers.0.mlp.fc1.weight"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
