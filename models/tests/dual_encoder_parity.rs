//! CLIPModel and SiglipModel against transformers on tiny random checkpoints
//! (`fixtures/make_dual_encoder_fixtures.py`): token ids identical; pixels from the video crate's image processor,
//! image, patch (last and second-to-last layer) and text embeddings (a long text chunked) and image-text scores
//! within 1e-5. Also the one-line refusals of one-tower and wrong-family checkpoints.

#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tokensieve_models::dual_encoder::{cosine, DualEncoder, DualEncoderError, DualKind};
use tokensieve_models::safetensors::Safetensors;
use tokensieve_video::preprocess::ImageProcessor;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tensor(st: &Safetensors, name: &str) -> Tensor {
    let (v, shape) = st.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    Tensor::from_slice(&v).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_device(Device::Cpu).to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

#[derive(serde::Deserialize)]
struct Reference {
    photos: Vec<String>,
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
}

fn check(name: &str, kind: DualKind) {
    let dir = fixture(name);
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let st = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("preprocessor_config.json")).unwrap()).unwrap();
    let processor = ImageProcessor::from_config(&config).unwrap();
    let mut pixels = Vec::new();
    for photo in &reference.photos {
        let path = dir.join(photo);
        let frame =
            tokensieve_video::images::load_image_native(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let p = processor.preprocess(&frame.rgb, frame.width as usize, frame.height as usize);
        pixels.push(Tensor::from_slice(&p.data).reshape([1, 3, p.height as i64, p.width as i64]));
    }
    let pixels = Tensor::cat(&pixels, 0);
    let d = max_diff(&pixels, &tensor(&st, "pixel_values"));
    assert!(d <= 1e-5, "{name}: pixels differ from transformers' image processor by {d}");
    for device in tokensieve_models::runtime::compute_devices_reported() {
        let model = DualEncoder::load(&dir, kind, device, Kind::Float).unwrap();
        let out = model.encode_images(&pixels.to_device(device), Some(-2)).unwrap();
        let d = max_diff(&out.image, &tensor(&st, "image_embeds"));
        assert!(d <= 1e-5, "{name} image embeddings differ by {d}");
        let d = max_diff(out.patches.as_ref().unwrap(), &tensor(&st, "patch_embeds.penultimate"));
        assert!(d <= 1e-5, "{name} layer -2 patch embeddings differ by {d}");
        let last = model.encode_images(&pixels.to_device(device), Some(-1)).unwrap();
        let d = max_diff(last.patches.as_ref().unwrap(), &tensor(&st, "patch_embeds.last"));
        assert!(d <= 1e-5, "{name} last-layer patch embeddings differ by {d}");
        let mut chunked = false;
        for (i, (text, ids)) in reference.texts.iter().zip(&reference.ids).enumerate() {
            assert_eq!(&model.tokenize(text).unwrap(), ids, "{name}: token ids of {text:?}");
            let embeds = model.text_embeddings(text).unwrap();
            chunked |= embeds.size()[0] > 1;
            let d = max_diff(&embeds, &tensor(&st, &format!("text_embeds.{i}")));
            assert!(d <= 1e-5, "{name} text embeddings of {text:?} differ by {d}");
            let scores = cosine(&out.image, &embeds).unwrap();
            let d = max_diff(&scores, &tensor(&st, &format!("scores.{i}")));
            assert!(d <= 1e-5, "{name} scores of {text:?} differ by {d}");
        }
        assert!(chunked, "{name}: the long text should need several rows of {} ids", model.text_positions());
    }
}

#[test]
fn tiny_clip_model_matches_transformers() {
    check("tiny_clip_model", DualKind::Clip);
}

#[test]
fn tiny_siglip_model_matches_transformers() {
    check("tiny_siglip_model", DualKind::Siglip);
}

#[test]
fn one_tower_and_wrong_family_checkpoints_are_refused_with_what_is_missing() {
    let refuse = |dir: PathBuf, kind: DualKind| match DualEncoder::load(&dir, kind, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("{} loaded as {kind:?}", dir.display()),
        Err(e) => (e.to_string(), e),
    };
    // The vision-only towers of the vision parity fixtures.
    let (text, e) = refuse(fixture("tiny_clip"), DualKind::Clip);
    assert!(matches!(e, DualEncoderError::OneTower { .. }), "{text}");
    assert!(text.contains("clip_vision_model") && text.contains("both the vision and the text tower"), "{text}");
    let (text, _) = refuse(fixture("tiny_siglip"), DualKind::Siglip);
    assert!(text.contains("siglip_vision_model"), "{text}");
    let (text, _) = refuse(fixture("tiny_siglip_model"), DualKind::Clip);
    assert!(text.contains("use --relevance siglip:"), "{text}");
    let (text, _) = refuse(fixture("tiny_llava"), DualKind::Clip);
    assert!(text.contains("is not a dual encoder"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
}
