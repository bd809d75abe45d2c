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
    let o = onnx
        .forward_at(
            &embeds,
            Some(&tokensieve_models::positions::PositionIds::Sequence(gapped.clone())),
            &mut onnx_cache,
        )
        .unwrap();
    assert!(max_diff(&t, &o) <= 1e-5, "prefill differs by {}", max_diff(&t, &o));
    let plain = onnx.forward(&embeds, &mut OnnxKvCache::default()).unwrap();
    let moved = o.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 1e-4, "the gaps must change the logits far more than the backends differ ({moved})");
    // The next step continues after the last given id on both sides.
    let step = onnx.embed(&[7]).unwrap();
    let t = torch.text.forward_embeds(as_tensor(&step), &mut torch_cache).unwrap();
    let o = onnx.forward(&step, &mut onnx_cache).unwrap();
    assert!(max_diff(&t, &o) <= 1e-5, "step differs by {}", max_diff(&t, &o));
    let bad = onnx
        .forward_at(&step, Some(&tokensieve_models::positions::PositionIds::Sequence(vec![0])), &mut onnx_cache)
        .unwrap_err()
        .to_string();
    assert!(bad.contains("must ascend"), "{bad}");
}

/// The Qwen-VL exports (`tiny_qwen2_5_vl_onnx`, `tiny_qwen3_vl_onnx`: `models/export/export_onnx.py` on the same
/// checkpoints as the torch parity tests) against transformers' reference, with the grid inputs computed on the host
/// by `qwen_grid`: merged features and Qwen3-VL's DeepStack planes of an image (windows that need padding) and a
/// video within 1e-4; last-position logits within 1e-4 for one image, two images of different grids, a video, a video
/// before an image and the video with 12 of its 32 tokens kept at their original 3-D ids (their DeepStack rows
/// gathered with the same keep set); the 20 greedy tokens of the video prompt and 5 after the pruned one, decoding
/// from the largest id + 1 on all three rows.
#[test]
fn onnx_qwen_vl_exports_match_transformers() {
    use tokensieve_models::onnx_decoder::{DeepStackInput, OnnxDecoder, OnnxKvCache};
    use tokensieve_models::onnx_encoder::GridOutput;
    use tokensieve_models::positions::PositionIds;
    use tokensieve_models::qwen_grid::QwenVisionConfig;
    const IMAGE: i64 = 92;
    const VIDEO: i64 = 93;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    };
    for fixture in ["tiny_qwen2_5_vl", "tiny_qwen3_vl"] {
        let file = Safetensors::open(&fixtures.join(fixture).join("reference.safetensors")).unwrap();
        let floats = |n: &str| file.tensor_f32(n).unwrap_or_else(|e| panic!("{fixture} {n}: {e}"));
        let ints = |n: &str| floats(n).0.iter().map(|&v| v as i64).collect::<Vec<_>>();
        let grid = |n: &str, i: usize| {
            let g = ints(n);
            [g[3 * i] as usize, g[3 * i + 1] as usize, g[3 * i + 2] as usize]
        };
        let positions = |n: &str| {
            let flat = ints(n);
            let l = flat.len() / 3;
            PositionIds::MRope([flat[..l].to_vec(), flat[l..2 * l].to_vec(), flat[2 * l..].to_vec()])
        };
        let last_row = |n: &str| {
            let (v, shape) = floats(n);
            v[v.len() - shape[1]..].to_vec()
        };
        let export = fixtures.join(format!("{fixture}_onnx"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap()).unwrap();
        let config: QwenVisionConfig = serde::Deserialize::deserialize(&json["vision_config"]).unwrap();
        let options = OnnxOptions::default();
        let mut encoder = OnnxVisionEncoder::load(&export.join("onnx/vision_encoder.onnx"), &options).unwrap();
        assert!(encoder.takes_grid());
        let mut decoder = OnnxDecoder::load(&export.join("onnx"), Precision::Fp32, &options).unwrap();
        assert!(decoder.mrope());
        let values = config.patch_values();
        let mut encode =
            |pixels: &[f32], g: [usize; 3]| -> GridOutput { encoder.encode_grid(pixels, g, &config).unwrap() };
        // [rows, levels x D] -> [levels, rows, D], for the rows `keep` of `out`.
        let planes = |out: &[&GridOutput], keep: Option<&[i64]>| -> Option<Vec<f32>> {
            let (levels, d) = (out[0].deepstack.as_ref()?.1, out[0].dim);
            let rows: Vec<&[f32]> =
                out.iter().flat_map(|o| o.deepstack.as_ref().unwrap().0.chunks(levels * d)).collect();
            let rows: Vec<&[f32]> = match keep {
                Some(k) => k.iter().map(|&i| rows[i as usize]).collect(),
                None => rows,
            };
            Some((0..levels).flat_map(|l| rows.iter().flat_map(move |r| r[l * d..(l + 1) * d].to_vec())).collect())
        };
        let prefill = |decoder: &mut OnnxDecoder,
                       ids: &[i64],
                       parts: &[(i64, &[f32])],
                       stack: Option<Vec<f32>>,
                       pos: &PositionIds,
                       cache: &mut OnnxKvCache| {
            let mut embeds = decoder.embed(ids).unwrap();
            for (token, rows) in parts {
                let n = splice(&mut embeds, ids, *token, rows);
                assert_eq!(n * embeds.shape[2], rows.len(), "{fixture}: placeholders of {token}");
            }
            let rows: Vec<i64> = (0..ids.len() as i64).filter(|&i| matches!(ids[i as usize], IMAGE | VIDEO)).collect();
            let stack = stack.as_ref().map(|planes| DeepStackInput { rows: &rows, planes });
            decoder.forward_stacked(&embeds, Some(pos), stack, cache).unwrap()
        };
        // Features (and planes) of the image and the video, and their prompts' logits.
        let mut outputs = Vec::new();
        for (case, pad) in [("image", IMAGE), ("video", VIDEO)] {
            let out = encode(&floats(&format!("{case}_pixels")).0, grid(&format!("{case}_grid"), 0));
            let d = diff(&out.features, &floats(&format!("{case}_features")).0);
            assert!(d <= 1e-4, "{fixture} {case} features differ by {d}");
            if let Ok(want) = file.tensor_f32(&format!("{case}_deepstack")) {
                let d = diff(&planes(&[&out], None).unwrap(), &want.0);
                assert!(d <= 1e-4, "{fixture} {case} DeepStack planes differ by {d}");
            } else {
                assert!(out.deepstack.is_none(), "{fixture}: planes without DeepStack");
            }
            let ids = ints(&format!("{case}_ids"));
            let logits = prefill(
                &mut decoder,
                &ids,
                &[(pad, &out.features)],
                planes(&[&out], None),
                &positions(&format!("{case}_positions")),
                &mut OnnxKvCache::default(),
            );
            let d = diff(&logits, &last_row(&format!("{case}_logits")));
            assert!(d <= 1e-4, "{fixture} {case} logits differ by {d}");
            outputs.push(out);
        }
        // Two images of different grids.
        let pixels = floats("two_pixels").0;
        let first = grid("two_grid", 0)[1] * grid("two_grid", 0)[2] * values;
        let a = encode(&pixels[..first], grid("two_grid", 0));
        let b = encode(&pixels[first..], grid("two_grid", 1));
        let both: Vec<f32> = a.features.iter().chain(&b.features).copied().collect();
        let logits = prefill(
            &mut decoder,
            &ints("two_ids"),
            &[(IMAGE, &both)],
            planes(&[&a, &b], None),
            &positions("two_positions"),
            &mut OnnxKvCache::default(),
        );
        let d = diff(&logits, &last_row("two_logits"));
        assert!(d <= 1e-4, "{fixture} two images: logits differ by {d}");
        // A video before an image: features per placeholder id, planes in prompt order.
        let video = encode(&floats("mixed_video_pixels").0, grid("mixed_video_grid", 0));
        let image = encode(&floats("mixed_image_pixels").0, grid("mixed_image_grid", 0));
        let parts = [(VIDEO, video.features.as_slice()), (IMAGE, image.features.as_slice())];
        let logits = prefill(
            &mut decoder,
            &ints("mixed_ids"),
            &parts,
            planes(&[&video, &image], None),
            &positions("mixed_positions"),
            &mut OnnxKvCache::default(),
        );
        let d = diff(&logits, &last_row("mixed_logits"));
        assert!(d <= 1e-4, "{fixture} video before image: logits differ by {d}");
        // Greedy decoding after a prefill: steps continue from the largest id + 1.
        let greedy = |decoder: &mut OnnxDecoder, first: Vec<f32>, cache: &mut OnnxKvCache, steps: usize| {
            let argmax = |v: &[f32]| {
                v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as i64
            };
            let mut out = vec![argmax(&first)];
            while out.len() < steps {
                let step = decoder.embed(&out[out.len() - 1..]).unwrap();
                out.push(argmax(&decoder.forward(&step, cache).unwrap()));
            }
            out
        };
        let full = &outputs[1];
        let mut cache = OnnxKvCache::default();
        let first = prefill(
            &mut decoder,
            &ints("video_ids"),
            &[(VIDEO, &full.features)],
            planes(&[full], None),
            &positions("video_positions"),
            &mut cache,
        );
        assert_eq!(greedy(&mut decoder, first, &mut cache, 20), ints("video_greedy"), "{fixture}: greedy tokens");
        // 12 of the 32 video tokens kept, at their original ids, and their DeepStack rows.
        let kept = ints("pruned_kept");
        let d = full.dim;
        let rows: Vec<f32> =
            kept.iter().flat_map(|&k| full.features[k as usize * d..(k as usize + 1) * d].to_vec()).collect();
        let mut cache = OnnxKvCache::default();
        let first = prefill(
            &mut decoder,
            &ints("pruned_ids"),
            &[(VIDEO, &rows)],
            planes(&[full], Some(&kept)),
            &positions("pruned_positions"),
            &mut cache,
        );
        let d = diff(&first, &last_row("pruned_logits"));
        assert!(d <= 1e-4, "{fixture} pruned prompt: logits differ by {d}");
        assert_eq!(
            greedy(&mut decoder, first, &mut cache, 5),
            ints("pruned_greedy"),
            "{fixture}: pruned greedy tokens"
        );
    }
}

/// The Qwen-VL exports' signals (the attention each merged token receives in the last full-attention block and that
/// block's keys, both pooled over the 2 x 2 patches) equal the torch tower's tap on the fixtures' video and image.
#[cfg(feature = "torch")]
#[test]
fn onnx_qwen_vl_signals_equal_the_torch_tap() {
    use tokensieve_models::qwen_vision::QwenVision;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for fixture in ["tiny_qwen2_5_vl", "tiny_qwen3_vl"] {
        let file = Safetensors::open(&fixtures.join(fixture).join("reference.safetensors")).unwrap();
        let torch = QwenVision::load_as(&fixtures.join(fixture), Device::Cpu, tch::Kind::Float).unwrap();
        let export = fixtures.join(format!("{fixture}_onnx/onnx/vision_encoder.onnx"));
        let mut onnx = OnnxVisionEncoder::load(&export, &OnnxOptions::default()).unwrap();
        for case in ["image", "video"] {
            let (pixels, _) = file.tensor_f32(&format!("{case}_pixels")).unwrap();
            let g: Vec<usize> =
                file.tensor_f32(&format!("{case}_grid")).unwrap().0.iter().map(|&v| v as usize).collect();
            let grid = [g[0], g[1], g[2]];
            let rows = Tensor::from_slice(&pixels).reshape([-1, torch.config.patch_values() as i64]);
            let request = SignalRequest { attention: true, keys: true };
            let tap = torch.encode(&rows, grid, request).unwrap();
            let out = onnx.encode_grid(&pixels, grid, &torch.config).unwrap();
            let what = format!("{fixture} {case}");
            let d = max_diff(&tap.features, &out.features);
            assert!(d <= 1e-5, "{what}: features differ by {d}");
            let d = max_diff(tap.attention.as_ref().unwrap(), out.attention.as_ref().unwrap());
            assert!(d <= 1e-6, "{what}: attention differs by {d}");
            let d = max_diff(tap.keys.as_ref().unwrap(), &out.keys.as_ref().unwrap().0);
            assert!(d <= 1e-5, "{what}: keys differ by {d}");
        }
    }
}
