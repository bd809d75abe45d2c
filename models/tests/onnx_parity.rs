//! The `onnx` backend's vision encoder against the torch backend (which equals transformers): the tiny LLaVA
//! exported by `models/export/export_onnx.py` (`fixtures/tiny_llava_onnx`) gives the same visual tokens, CLS
//! attention and keys on the fixture's two reference images.

#![cfg(feature = "onnx")]

use std::path::Path;
#[cfg(feature = "torch")]
use tch::{Device, Tensor};
#[cfg(feature = "torch")]
use tokensieve_models::llava::Llava;
use tokensieve_models::onnx_encoder::OnnxVisionEncoder;
use tokensieve_models::onnx_session::{OnnxOptions, Precision};
use tokensieve_models::safetensors::Safetensors;
#[cfg(feature = "torch")]
use tokensieve_models::vision::SignalRequest;

#[cfg(feature = "torch")]
fn max_diff(a: &Tensor, b: &[f32]) -> f64 {
    let a: Vec<f32> = Vec::try_from(a.reshape([-1]).to_device(Device::Cpu)).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

/// A fixture's reference prompt: token ids, pixels, transformers' logits `[S, V]` and the vocabulary size.
struct Reference {
    ids: Vec<i64>,
    pixels: Vec<f32>,
    logits: Vec<f32>,
    vocab: usize,
}

/// Reads `{prefix}ids` (`input_ids` when `prefix` is empty), `{prefix}pixels` and `{prefix}logits` of a fixture.
fn reference(fixture: &str, prefix: &str) -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture).join("reference.safetensors");
    let file = Safetensors::open(&path).unwrap();
    let name = |n: &str| if prefix.is_empty() && n == "ids" { "input_ids".to_string() } else { format!("{prefix}{n}") };
    let pixels_name = if prefix.is_empty() { "pixel_values".to_string() } else { name("pixels") };
    let ids = file.tensor_f32(&name("ids")).unwrap().0.iter().map(|&v| v as i64).collect();
    let (logits, shape) = file.tensor_f32(&name("logits")).unwrap();
    Reference { ids, pixels: file.tensor_f32(&pixels_name).unwrap().0, logits, vocab: shape[1] }
}

/// Writes `visual` rows `[N·D]` over the embeddings of every `token` in `ids`, in order; returns how many.
fn splice(embeds: &mut tokensieve_models::onnx_session::Array, ids: &[i64], token: i64, visual: &[f32]) -> usize {
    let d = embeds.shape[2];
    let slots: Vec<usize> = ids.iter().enumerate().filter(|(_, &t)| t == token).map(|(p, _)| p).collect();
    for (k, &p) in slots.iter().enumerate() {
        embeds.data[p * d..(p + 1) * d].copy_from_slice(&visual[k * d..(k + 1) * d]);
    }
    slots.len()
}

/// The SigLIP export's signals (received attention and keys at the feature layer) equal the torch tower's tap.
#[cfg(feature = "torch")]
#[test]
fn onnx_siglip_signals_equal_the_torch_tap() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let Reference { pixels: frames, .. } = reference("tiny_onevision", "video_");
    let onnx_dir = fixtures.join("tiny_onevision_onnx/onnx");
    let mut encoder = OnnxVisionEncoder::load(&onnx_dir.join("vision_encoder.onnx"), &OnnxOptions::default()).unwrap();
    let out = encoder.encode(&frames, 3, 32).unwrap();
    let torch = Llava::load(&fixtures.join("tiny_onevision"), Device::Cpu).unwrap();
    let batch = Tensor::from_slice(&frames).reshape([3, 3, 32, 32]);
    let tap = torch.encode_views(&batch, SignalRequest { attention: true, keys: true }).unwrap();
    let attention = out.cls_attention.expect("the export writes the attention");
    assert!(max_diff(tap.attention.as_ref().unwrap(), &attention.data) <= 1e-5, "received attention");
    assert!(max_diff(tap.keys.as_ref().unwrap(), &out.keys.unwrap().data) <= 1e-5, "keys");
}

#[cfg(feature = "torch")]
#[test]
fn onnx_vision_encoder_equals_the_torch_backend() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference = Safetensors::open(&fixtures.join("tiny_llava/reference.safetensors")).unwrap();
    let (pixels, shape) = reference.tensor_f32("two_pixels").unwrap();
    let torch = Llava::load(&fixtures.join("tiny_llava"), Device::Cpu).unwrap();
    let batch = Tensor::from_slice(&pixels).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice());
    let (features, _) = torch.image_features(&batch).unwrap();
    // The signals at the feature layer (-2 here), as the pipeline taps them.
    let tap = torch.encode_views(&batch, SignalRequest { attention: true, keys: true }).unwrap();
    assert!(max_diff(&tap.features, &Vec::<f32>::try_from(features.reshape([-1])).unwrap()) <= 1e-6);
    for options in [
        OnnxOptions::default(),
        OnnxOptions { intra_threads: 1, memory_pattern: false, memory_arena: false, optimization: 0 },
    ] {
        let path = fixtures.join("tiny_llava_onnx/onnx/vision_encoder.onnx");
        let mut onnx = OnnxVisionEncoder::load(&path, &options).unwrap();
        let got = onnx.encode(&pixels, 2, 32).unwrap();
        assert_eq!(got.features.shape, vec![2, 16, 32]);
        let d = max_diff(&features, &got.features.data);
        assert!(d <= 1e-4, "{options:?}: visual tokens differ by {d}");
        let cls = got.cls_attention.expect("the export writes the attention");
        assert_eq!(cls.shape, vec![2, 16], "the CLS row over the patches");
        assert!(max_diff(tap.attention.as_ref().unwrap(), &cls.data) <= 1e-5, "{options:?}: CLS attention");
        let keys = got.keys.expect("the export writes the keys");
        assert_eq!(keys.shape, vec![2, 16, 8], "aligned with the patch tokens");
        assert!(max_diff(tap.keys.as_ref().unwrap(), &keys.data) <= 1e-5, "{options:?}: keys");
        // A wrong pixel count is a typed error naming the file.
        let err = onnx.encode(&pixels[..10], 2, 32).unwrap_err().to_string();
        assert!(err.contains("vision_encoder.onnx") && err.contains("10 pixel values"), "{err}");
    }
    assert!(OnnxVisionEncoder::load(&fixtures.join("missing.onnx"), &OnnxOptions::default()).is_err());
}

/// The whole ONNX path on the tiny LLaVA export: encoder -> embeddings with the visual tokens written at the
/// placeholders -> merged decoder prefill and cached steps: logits within 1e-4 of transformers' at every position
/// after the image, and the 20 greedy tokens of transformers' `generate()`.
#[test]
fn onnx_llava_matches_transformers_logits_and_greedy_tokens() {
    use tokensieve_models::onnx_decoder::{OnnxDecoder, OnnxKvCache};
    use tokensieve_models::onnx_session::Array;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let Reference { ids, pixels, logits, vocab } = reference("tiny_llava", "");
    let file = Safetensors::open(&fixtures.join("tiny_llava/reference.safetensors")).unwrap();
    let greedy: Vec<i64> = file.tensor_f32("greedy").unwrap().0.iter().map(|&v| v as i64).collect();
    let onnx_dir = fixtures.join("tiny_llava_onnx/onnx");
    let options = OnnxOptions::default();
    let mut encoder = OnnxVisionEncoder::load(&onnx_dir.join("vision_encoder.onnx"), &options).unwrap();
    let visual = encoder.encode(&pixels, 1, 32).unwrap().features;
    let mut decoder = OnnxDecoder::load(&onnx_dir, Precision::Fp32, &options).unwrap();
    let merged = |ids: &[i64], decoder: &mut OnnxDecoder| -> Array {
        let mut e = decoder.embed(ids).unwrap();
        let next = splice(&mut e, ids, 63, &visual.data);
        assert!(next == 0 || next == 16, "all 16 placeholders filled");
        e
    };
    let prefill = 20;
    let mut cache = OnnxKvCache::default();
    let e = merged(&ids[..prefill], &mut decoder);
    let mut out = decoder.forward(&e, &mut cache).unwrap();
    for pos in prefill - 1..ids.len() {
        let want = &logits[pos * vocab..(pos + 1) * vocab];
        let d = out.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d <= 1e-4, "position {pos} differs by {d}");
        if pos + 1 < ids.len() {
            let e = merged(&ids[pos + 1..pos + 2], &mut decoder);
            out = decoder.forward(&e, &mut cache).unwrap();
        }
    }
    assert_eq!(cache.len(), ids.len());
    let argmax = |row: &[f32]| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as i64).unwrap();
    let mut cache = OnnxKvCache::default();
    let e = merged(&ids, &mut decoder);
    let mut next = argmax(&decoder.forward(&e, &mut cache).unwrap());
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(next);
        let e = merged(&[next], &mut decoder);
        next = argmax(&decoder.forward(&e, &mut cache).unwrap());
    }
    assert_eq!(tokens, greedy, "20 greedy tokens");
}

/// The LLaVA-OneVision export: SigLIP encoder (no CLS, keys only) on a 3-frame video, pooled 2x2 and followed by the
/// newline from `export.json` outside the graph, then the merged decoder: transformers' last-position logits within
/// 1e-4.
#[test]
fn onnx_onevision_video_matches_transformers() {
    use tokensieve_models::onevision::{pool_video, Views};
    use tokensieve_models::onnx_decoder::{OnnxDecoder, OnnxKvCache};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let Reference { ids, pixels: frames, logits, vocab } = reference("tiny_onevision", "video_");
    let onnx_dir = fixtures.join("tiny_onevision_onnx/onnx");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(onnx_dir.join("export.json")).unwrap()).unwrap();
    let newline: Vec<f32> =
        info["image_newline"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let mut encoder = OnnxVisionEncoder::load(&onnx_dir.join("vision_encoder.onnx"), &OnnxOptions::default()).unwrap();
    let out = encoder.encode(&frames, 3, 32).unwrap();
    // SigLIP has no CLS token: the attention each token receives (mean over heads and queries) at the feature layer,
    // equal to the torch tower's.
    let attention = out.cls_attention.as_ref().expect("the export writes the attention");
    assert_eq!(attention.shape, vec![3, 16]);
    let sums: Vec<f32> = attention.data.chunks(16).map(|r| r.iter().sum()).collect();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "a mean of softmax rows sums to one: {sums:?}");
    let features = Views { data: &out.features.data, views: 3, tokens: 16, dim: 32 };
    let pooled = pool_video(features).unwrap();
    let visual: Vec<f32> = pooled.into_iter().chain(newline).collect();
    let mut decoder = OnnxDecoder::load(&onnx_dir, Precision::Fp32, &OnnxOptions::default()).unwrap();
    let mut embeds = decoder.embed(&ids).unwrap();
    assert_eq!(splice(&mut embeds, &ids, 63, &visual), 13, "3 frames x 2x2 pooled + the newline");
    let got = decoder.forward(&embeds, &mut OnnxKvCache::default()).unwrap();
    let want = &logits[(ids.len() - 1) * vocab..ids.len() * vocab];
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff <= 1e-4, "last position differs by {diff}");
}

/// The precision variants of the tiny LLaVA export (`export_onnx.py --precision fp16,q8`): fp16 graphs take and
/// return float16 (the backend converts at the boundary), q8 graphs hold 8-bit weights. Their last-position logits
/// stay near transformers' f32 ones, and the variant files are the ones that run (fp32 is exact, the others are not).
#[test]
fn onnx_precision_variants_load_and_stay_close_to_transformers() {
    use tokensieve_models::onnx_decoder::{OnnxDecoder, OnnxKvCache};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let Reference { ids, pixels, logits, vocab } = reference("tiny_llava", "");
    let want = &logits[(ids.len() - 1) * vocab..ids.len() * vocab];
    let onnx_dir = fixtures.join("tiny_llava_onnx/onnx");
    let options = OnnxOptions::default();
    let mut diffs = Vec::new();
    for (precision, tolerance) in [(Precision::Fp32, 1e-4), (Precision::Fp16, 2e-3), (Precision::Q8, 5e-2)] {
        let path = onnx_dir.join(precision.file("vision_encoder"));
        let visual = OnnxVisionEncoder::load(&path, &options).unwrap().encode(&pixels, 1, 32).unwrap().features;
        let mut decoder = OnnxDecoder::load(&onnx_dir, precision, &options).unwrap();
        let mut e = decoder.embed(&ids).unwrap();
        assert_eq!(splice(&mut e, &ids, 63, &visual.data), 16);
        let got = decoder.forward(&e, &mut OnnxKvCache::default()).unwrap();
        let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= tolerance, "{precision:?}: last position differs by {diff}");
        diffs.push(diff);
    }
    assert!(diffs[1] > 0.0 && diffs[2] > 0.0, "the fp16 and q8 files really are different graphs: {diffs:?}");
    assert_eq!(Precision::parse("quantized"), Ok(Precision::Q8));
    assert_eq!(Precision::Q4.file("decoder_model_merged"), "decoder_model_merged_q4.onnx");
    assert!(Precision::parse("fp8").unwrap_err().contains("fp8"));
}

/// A user's own encoder (`make_custom_encoder_fixture.py`): a graph returning `[N, D]` for one image is recognised
/// as unbatched, and its tokens come back as `[1, N, D]` equal to torch's.
#[test]
fn a_custom_two_dimensional_encoder_runs_unbatched() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/custom_encoder");
    let reference = Safetensors::open(&fixtures.join("reference.safetensors")).unwrap();
    let (pixels, _) = reference.tensor_f32("pixels").unwrap();
    let (tokens, shape) = reference.tensor_f32("tokens").unwrap();
    assert_eq!(shape, vec![16, 24]);
    let mut encoder = OnnxVisionEncoder::load(&fixtures.join("encoder.onnx"), &OnnxOptions::default()).unwrap();
    assert!(!encoder.batched());
    let out = encoder.encode(&pixels, 1, 32).unwrap();
    assert_eq!(out.features.shape, vec![1, 16, 24]);
    let d = out.features.data.iter().zip(&tokens).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d <= 1e-5, "tokens differ by {d}");
    assert!(out.cls_attention.is_none());
}

/// Explicit position ids with gaps (pruned visual tokens keeping their original ids): the torch decoder's rotary
/// embedding and the transformers-exported graph agree on them within 1e-5, in the prefill and in the next step,
/// and the gaps do change the logits.
#[cfg(feature = "torch")]
#[test]
fn gapped_position_ids_agree_between_torch_and_onnx() {
    use tokensieve_models::llama::KvCache;
    use tokensieve_models::onnx_decoder::{OnnxDecoder, OnnxKvCache};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let Reference { ids, .. } = reference("tiny_llava", "");
    let torch = Llava::load(&fixtures.join("tiny_llava"), Device::Cpu).unwrap();
    let mut onnx =
        OnnxDecoder::load(&fixtures.join("tiny_llava_onnx/onnx"), Precision::Fp32, &OnnxOptions::default()).unwrap();
    let embeds = onnx.embed(&ids).unwrap();
    let as_tensor = |a: &tokensieve_models::onnx_session::Array| {
        Tensor::from_slice(&a.data).reshape(a.shape.iter().map(|&d| d as i64).collect::<Vec<_>>().as_slice())
    };
    // Every other position skipped from the 4th on, as if half the visual tokens had been pruned.
    let gapped: Vec<i64> = (0..ids.len() as i64).map(|p| if p < 3 { p } else { 2 * p - 3 }).collect();
    let mut torch_cache = KvCache::default();
    let t = torch.text.forward_embeds_at(as_tensor(&embeds), &gapped, &mut torch_cache, None).unwrap();
    let mut onnx_cache = OnnxKvCache::default();
    let o = onnx.forward_at(&embeds, Some(&gapped), &mut onnx_cache).unwrap();
    assert!(max_diff(&t, &o) <= 1e-5, "prefill differs by {}", max_diff(&t, &o));
    let plain = onnx.forward(&embeds, &mut OnnxKvCache::default()).unwrap();
    let moved = o.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 1e-4, "the gaps must change the logits far more than the backends differ ({moved})");
    // The next step continues after the last given id on both sides.
    let step = onnx.embed(&[7]).unwrap();
    let t = torch.text.forward_embeds(as_tensor(&step), &mut torch_cache).unwrap();
    let o = onnx.forward(&step, &mut onnx_cache).unwrap();
    assert!(max_diff(&t, &o) <= 1e-5, "step differs by {}", max_diff(&t, &o));
    let bad = onnx.forward_at(&step, Some(&[0]), &mut onnx_cache).unwrap_err().to_string();
    assert!(bad.contains("must ascend"), "{bad}");
}
