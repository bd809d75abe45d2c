//! CLIPModel and SiglipModel against transformers on tiny random checkpoints
//! (`fixtures/make_dual_encoder_fixtures.py`), on libtorch and on their ONNX exports
//! (`models/export/export_dual_onnx.py`): token ids identical; pixels from the video crate's image processor equal to
//! transformers'; image, patch (last and second-to-last layer) and text embeddings (a long text chunked) and
//! image-text scores within 1e-5. Also the one-line refusals of one-tower and wrong-family checkpoints.

#![cfg(any(feature = "torch", feature = "onnx"))]

use std::path::{Path, PathBuf};
use tokensieve_models::dual_encoder::{DualEncoderError, DualKind, DualSpec};
use tokensieve_models::safetensors::Safetensors;
use tokensieve_video::preprocess::ImageProcessor;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[derive(serde::Deserialize)]
struct Reference {
    photos: Vec<String>,
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
}

/// A fixture's reference, its tensors and the photos preprocessed here (`[photos, 3, S, S]`, checked against
/// transformers' pixel values).
struct Fixture {
    reference: Reference,
    tensors: Safetensors,
    pixels: Vec<f32>,
}

fn values(st: &Safetensors, name: &str) -> Vec<f32> {
    st.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `rows` x `cols` cosines of unit-normalised rows.
fn cosines(a: &[f32], b: &[f32], dim: usize) -> Vec<f32> {
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter().map(|x| x / n).collect::<Vec<_>>()
    };
    a.chunks(dim)
        .flat_map(|x| b.chunks(dim).map(move |y| unit(x).iter().zip(unit(y)).map(|(p, q)| p * q).sum()))
        .collect()
}

fn load(name: &str) -> Fixture {
    let dir = fixture(name);
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let tensors = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("preprocessor_config.json")).unwrap()).unwrap();
    let processor = ImageProcessor::from_config(&config).unwrap();
    let mut pixels = Vec::new();
    for photo in &reference.photos {
        let path = dir.join(photo);
        let frame =
            tokensieve_video::images::load_image_native(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        pixels.extend(processor.preprocess(&frame.rgb, frame.width as usize, frame.height as usize).data);
    }
    let d = max_diff(&pixels, &values(&tensors, "pixel_values"));
    assert!(d <= 1e-5, "{name}: pixels differ from transformers' image processor by {d}");
    Fixture { reference, tensors, pixels }
}

/// What a backend gives for the fixture: image embeddings, patch embeddings of layers -2 and -1, and per text its
/// ids and embeddings (all flat, row-major).
struct Outputs {
    image: Vec<f32>,
    penultimate: Vec<f32>,
    last: Vec<f32>,
    texts: Vec<(Vec<u32>, Vec<f32>)>,
}

fn compare(name: &str, f: &Fixture, out: &Outputs, dim: usize) {
    let st = &f.tensors;
    let d = max_diff(&out.image, &values(st, "image_embeds"));
    assert!(d <= 1e-5, "{name} image embeddings differ by {d}");
    let d = max_diff(&out.penultimate, &values(st, "patch_embeds.penultimate"));
    assert!(d <= 1e-5, "{name} layer -2 patch embeddings differ by {d}");
    let d = max_diff(&out.last, &values(st, "patch_embeds.last"));
    assert!(d <= 1e-5, "{name} last-layer patch embeddings differ by {d}");
    let mut chunked = false;
    for (i, ((text, want_ids), (ids, embeds))) in
        f.reference.texts.iter().zip(&f.reference.ids).zip(&out.texts).enumerate()
    {
        assert_eq!(ids, want_ids, "{name}: token ids of {text:?}");
        chunked |= embeds.len() > dim;
        let d = max_diff(embeds, &values(st, &format!("text_embeds.{i}")));
        assert!(d <= 1e-5, "{name} text embeddings of {text:?} differ by {d}");
        let d = max_diff(&cosines(&out.image, embeds, dim), &values(st, &format!("scores.{i}")));
        assert!(d <= 1e-5, "{name} scores of {text:?} differ by {d}");
    }
    assert!(chunked, "{name}: the long text should need several rows");
}

#[cfg(feature = "torch")]
fn torch_outputs(name: &str, kind: DualKind, f: &Fixture, device: tch::Device) -> (Outputs, usize) {
    use tch::{Kind, Tensor};
    use tokensieve_models::dual_encoder::DualEncoder;
    let flat = |t: &Tensor| Vec::<f32>::try_from(t.reshape([-1]).to_device(tch::Device::Cpu)).unwrap();
    let model = DualEncoder::load(&fixture(name), kind, device, Kind::Float).unwrap();
    let side = model.image_size() as i64;
    let photos = f.reference.photos.len() as i64;
    let pixels = Tensor::from_slice(&f.pixels).reshape([photos, 3, side, side]).to_device(device);
    let out = model.encode_images(&pixels, Some(-2)).unwrap();
    let last = model.encode_images(&pixels, Some(-1)).unwrap();
    let texts = f
        .reference
        .texts
        .iter()
        .map(|t| (model.tokenize(t).unwrap(), flat(&model.text_embeddings(t).unwrap())))
        .collect();
    let outputs = Outputs {
        image: flat(&out.image),
        penultimate: flat(out.patches.as_ref().unwrap()),
        last: flat(last.patches.as_ref().unwrap()),
        texts,
    };
    (outputs, model.dim)
}

#[cfg(feature = "torch")]
#[test]
fn tiny_dual_encoders_match_transformers_on_libtorch() {
    for (name, kind) in [("tiny_clip_model", DualKind::Clip), ("tiny_siglip_model", DualKind::Siglip)] {
        let f = load(name);
        for device in tokensieve_models::runtime::compute_devices_reported() {
            let (out, dim) = torch_outputs(name, kind, &f, device);
            compare(name, &f, &out, dim);
        }
    }
}

#[cfg(feature = "onnx")]
#[test]
fn tiny_dual_encoder_exports_match_transformers_on_onnx_runtime() {
    use tokensieve_models::dual_encoder::is_onnx_export as is_export;
    use tokensieve_models::onnx_dual_encoder::OnnxDualEncoder;
    for (name, kind) in [("tiny_clip_model", DualKind::Clip), ("tiny_siglip_model", DualKind::Siglip)] {
        let f = load(name);
        let export = fixture(&format!("{name}_onnx"));
        assert!(is_export(&export) && !is_export(&fixture(name)));
        let mut model = OnnxDualEncoder::load(&export, kind, &Default::default()).unwrap();
        let photos = f.reference.photos.len();
        let (image, penultimate) = model.encode_images(&f.pixels, photos, Some(-2)).unwrap();
        let (_, last) = model.encode_images(&f.pixels, photos, Some(-1)).unwrap();
        assert!(model.encode_images(&f.pixels, photos, Some(0)).unwrap_err().to_string().contains("-1 and -2 only"));
        let texts = f
            .reference
            .texts
            .iter()
            .map(|t| (model.tokenize(t).unwrap(), model.text_embeddings(t).unwrap().into_raw_vec_and_offset().0))
            .collect();
        let outputs = Outputs {
            image: image.into_raw_vec_and_offset().0,
            penultimate: penultimate.unwrap().into_raw_vec_and_offset().0,
            last: last.unwrap().into_raw_vec_and_offset().0,
            texts,
        };
        compare(name, &f, &outputs, model.spec.dim);
    }
}

#[test]
fn one_tower_and_wrong_family_checkpoints_are_refused_with_what_is_missing() {
    let refuse = |dir: PathBuf, kind: DualKind| match DualSpec::read(&dir, kind) {
        Ok(_) => panic!("{} read as {kind:?}", dir.display()),
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
