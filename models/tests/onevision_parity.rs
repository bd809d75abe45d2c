//! A tiny random LLaVA-OneVision (SigLIP + mlp2x_gelu + image_newline + Qwen2) against transformers
//! (`fixtures/make_onevision_fixtures.py`): logits within 1e-4 after an any-resolution image prompt (with and without
//! the `anyres_max` shrink), a two-image prompt and a video prompt, and the 20 greedy tokens of the video prompt.

#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use tch::{Device, Tensor};
use tokensieve_models::llama::KvCache;
use tokensieve_models::llava::{Llava, LlavaError};
use tokensieve_models::onevision::{image_token_count, video_token_count};
use tokensieve_models::safetensors::Safetensors;
use tokensieve_video::preprocess::anyres::select_best_resolution;

const IMAGE: i64 = 62;
const VIDEO: i64 = 63;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_onevision")
}

struct Reference(Safetensors);

impl Reference {
    fn tensor(&self, name: &str) -> Tensor {
        let (v, shape) = self.0.tensor_f32(name).unwrap();
        Tensor::from_slice(&v).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice())
    }
    fn ids(&self, name: &str) -> Vec<i64> {
        self.0.tensor_f32(name).unwrap().0.iter().map(|&v| v as i64).collect()
    }
}

/// Prefills up to the first text token after the last visual token, then decodes the rest of the prompt from the
/// cache, comparing every logit row with transformers'.
fn check(model: &Llava, ids: &[i64], parts: &[(i64, &Tensor)], logits: &Tensor, case: &str, device: Device) {
    let last = ids.iter().rposition(|&t| t == IMAGE || t == VIDEO).unwrap();
    let prefill = last + 2;
    let mut cache = KvCache::default();
    let on = |t: &[i64]| Tensor::from_slice(t).unsqueeze(0).to_device(device);
    let embeds = model.merge_at(&on(&ids[..prefill]), parts).unwrap();
    let mut out = model.text.forward_embeds(embeds, &mut cache).unwrap();
    for pos in prefill - 1..ids.len() {
        let d = (out.reshape([-1]).to_device(Device::Cpu) - logits.get(pos as i64)).abs().max().double_value(&[]);
        assert!(d <= 1e-4, "{case} on {device:?}: position {pos} differs by {d}");
        if pos + 1 < ids.len() {
            out = model.text.forward(&on(&ids[pos + 1..pos + 2]), &mut cache).unwrap();
        }
    }
}

fn devices() -> Vec<Device> {
    tokensieve_models::runtime::compute_devices_reported()
}

#[test]
fn tiny_onevision_matches_transformers_on_images_and_video() {
    for device in devices() {
        onevision_on(device);
    }
}

fn onevision_on(device: Device) {
    let model = Llava::load(&dir(), device).unwrap();
    let ov = model.onevision.as_ref().expect("llava_onevision config");
    let r = Reference(Safetensors::open(&dir().join("reference.safetensors")).unwrap());

    for case in ["image", "small"] {
        let ids = r.ids(&format!("{case}_ids"));
        let sizes = r.ids(&format!("{case}_sizes"));
        let (h, w) = (sizes[0] as usize, sizes[1] as usize);
        let views = r.tensor(&format!("{case}_pixels")).squeeze_dim(0).to_device(device);
        let best = select_best_resolution(h, w, &ov.pinpoints).unwrap();
        let grid = (best.0 / 32, best.1 / 32);
        let (tokens, _) = model.anyres_image_features(&views, h, w, grid).unwrap();
        let expected = image_token_count(h, w, grid, 4, ov.max_patches);
        assert_eq!(tokens.size()[0] as usize, expected, "{case}: the processor's count");
        assert_eq!(ids.iter().filter(|&&t| t == IMAGE).count(), expected, "{case}: transformers' count");
        check(&model, &ids, &[(IMAGE, &tokens)], &r.tensor(&format!("{case}_logits")), case, device);
    }

    let ids = r.ids("two_ids");
    let two = r.tensor("two_pixels").reshape([2, 3, 32, 32]).to_device(device);
    let (tokens, _) = model.multi_image_features(&two).unwrap();
    check(&model, &ids, &[(IMAGE, &tokens)], &r.tensor("two_logits"), "two images", device);

    let ids = r.ids("video_ids");
    let (pooled, _) = model.video_features(&r.tensor("video_pixels").squeeze_dim(0).to_device(device)).unwrap();
    let (f, n, d) = pooled.size3().unwrap();
    assert_eq!((f * n + 1) as usize, video_token_count(3, 4));
    let tokens = Tensor::cat(&[pooled.reshape([f * n, d]), ov.newline.reshape([1, d])], 0);
    check(&model, &ids, &[(VIDEO, &tokens)], &r.tensor("video_logits"), "video", device);

    // 20 greedy tokens after the video prompt equal transformers' generate().
    let mut cache = KvCache::default();
    let embeds = model.merge_at(&Tensor::from_slice(&ids).unsqueeze(0).to_device(device), &[(VIDEO, &tokens)]).unwrap();
    let mut next = model.text.forward_embeds(embeds, &mut cache).unwrap().argmax(-1, false).int64_value(&[0]);
    let mut greedy = Vec::new();
    for _ in 0..20 {
        greedy.push(next);
        let step = Tensor::from_slice(&[next]).unsqueeze(0).to_device(device);
        next = model.text.forward(&step, &mut cache).unwrap().argmax(-1, false).int64_value(&[0]);
    }
    assert_eq!(greedy, r.ids("video_greedy"));
}

#[test]
fn onevision_inputs_on_a_plain_llava_are_a_typed_error() {
    let llava = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llava");
    let model = Llava::load(&llava, Device::Cpu).unwrap();
    assert!(model.onevision.is_none());
    let frames = Tensor::zeros([2, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    assert!(matches!(model.video_features(&frames), Err(LlavaError::Config { .. })));
}

/// bf16 and f16 on the CPU and on every CUDA device (`make test-cuda` runs this where there is one).
#[test]
fn half_precision_compute_stays_close_to_transformers_f32() {
    let r = Reference(Safetensors::open(&dir().join("reference.safetensors")).unwrap());
    let ids = r.ids("video_ids");
    let reference = r.tensor("video_logits").get(ids.len() as i64 - 1);
    let runs = tokensieve_models::runtime::compute_devices_reported().into_iter().flat_map(|device| {
        [(tch::Kind::BFloat16, 3e-2), (tch::Kind::Half, 5e-3)].map(|(dtype, tolerance)| (device, dtype, tolerance))
    });
    for (device, dtype, tolerance) in runs {
        let model = Llava::load_as(&dir(), device, dtype).unwrap();
        let ov = model.onevision.as_ref().unwrap();
        let (pooled, _) = model.video_features(&r.tensor("video_pixels").squeeze_dim(0).to_device(device)).unwrap();
        assert_eq!(pooled.kind(), dtype, "the tower computes in {dtype:?}");
        let (f, n, d) = pooled.size3().unwrap();
        let tokens = Tensor::cat(&[pooled.reshape([f * n, d]), ov.newline.reshape([1, d])], 0);
        let ids = Tensor::from_slice(&ids).unsqueeze(0).to_device(device);
        let embeds = model.merge_at(&ids, &[(VIDEO, &tokens)]).unwrap();
        let logits = model.text.forward_embeds(embeds, &mut KvCache::default()).unwrap();
        assert_eq!(logits.kind(), tch::Kind::Float, "logits come back as f32");
        let diff = (logits.reshape([-1]).to_device(Device::Cpu) - &reference).abs().max().double_value(&[]);
        assert!(diff <= tolerance, "{dtype:?} on {device:?}: logits differ from f32 by {diff}");
        assert!(diff > 0.0, "{dtype:?} on {device:?} really computed in lower precision");
    }
}

/// The engine arranges OneVision's tokens with the family rule on the host (`arch::llava_onevision`), not with the
/// tensor helpers above: on every input of the parity test it gives the same tokens, so the engine's path equals
/// transformers too.
#[test]
fn the_family_arrangement_equals_the_checked_tokens() {
    use tokensieve_models::arch::{family_for, AnyResCut, MediaKind, SignalRequest, TowerOutput};
    let model = Llava::load(&dir(), Device::Cpu).unwrap();
    let ov = model.onevision.as_ref().unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    let newline: Vec<f32> = Vec::try_from(&ov.newline).unwrap();
    let family = family_for(&config, Some(newline)).unwrap();
    let host = |t: &Tensor| Vec::<f32>::try_from(t.reshape([-1])).unwrap();
    let arranged = |views: &Tensor, kind: MediaKind, cut: Option<AnyResCut>| -> Vec<f32> {
        let tap = model.encode_views(views, SignalRequest { attention: true, keys: true }).unwrap();
        let (b, n, d) = tap.features.size3().unwrap();
        let out = TowerOutput {
            features: host(&tap.features),
            views: b as usize,
            tokens: n as usize,
            dim: d as usize,
            attention: tap.attention.as_ref().map(host),
            keys: tap.keys.as_ref().map(|k| (host(k), k.size()[2] as usize)),
            grid: None,
            deepstack: None,
        };
        let visual = family.arrange(out, kind, cut).unwrap();
        assert_eq!(visual.attention.as_ref().unwrap().len(), visual.features.nrows(), "signals follow the tokens");
        visual.features.iter().copied().collect()
    };
    let max_diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    };
    let r = Reference(Safetensors::open(&dir().join("reference.safetensors")).unwrap());
    for case in ["image", "small"] {
        let sizes = r.ids(&format!("{case}_sizes"));
        let (h, w) = (sizes[0] as usize, sizes[1] as usize);
        let views = r.tensor(&format!("{case}_pixels")).squeeze_dim(0);
        let best = select_best_resolution(h, w, &ov.pinpoints).unwrap();
        let grid = (best.0 / 32, best.1 / 32);
        let (tokens, _) = model.anyres_image_features(&views, h, w, grid).unwrap();
        let cut = Some(AnyResCut { image: (h, w), grid });
        assert!(max_diff(&arranged(&views, MediaKind::Images, cut), &host(&tokens)) <= 1e-6, "{case}");
    }
    // Several images: the family keeps each image's tokens and the engine adds the newline after each image.
    let two = r.tensor("two_pixels").reshape([2, 3, 32, 32]);
    let (tokens, _) = model.multi_image_features(&two).unwrap();
    let with_newlines: Vec<f32> = host(&tokens.reshape([2, 17, -1]).narrow(1, 0, 16));
    assert!(max_diff(&arranged(&two, MediaKind::Images, None), &with_newlines) <= 1e-6, "two images");
    let frames = r.tensor("video_pixels").squeeze_dim(0);
    let (pooled, _) = model.video_features(&frames).unwrap();
    assert!(max_diff(&arranged(&frames, MediaKind::Video, None), &host(&pooled)) <= 1e-6, "video");
}
