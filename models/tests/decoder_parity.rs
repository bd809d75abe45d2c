//! Llama and Qwen2 decoders from Hugging Face directories against transformers on tiny random checkpoints
//! (`fixtures/make_decoder_fixtures.py`): the prefill's last-position logits, then cached decoding one token at a
//! time, within 1e-4 at every position.

#![cfg(feature = "torch")]

use std::path::Path;
use tch::{Device, Tensor};
use tokensieve_models::llama::{KvCache, Llama};
use tokensieve_models::safetensors::Safetensors;

fn check(name: &str) {
    for device in tokensieve_models::runtime::compute_devices_reported() {
        check_on(name, device);
    }
}

fn check_on(name: &str, device: Device) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let model = Llama::from_hf_dir(&dir, device).unwrap();
    let reference = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
    let ids: Vec<i64> = reference.tensor_f32("input_ids").unwrap().0.iter().map(|&v| v as i64).collect();
    let (logits, shape) = reference.tensor_f32("logits").unwrap();
    let vocab = shape[1];
    let prefill = 6;
    let mut cache = KvCache::default();
    let on = |t: &[i64]| Tensor::from_slice(t).unsqueeze(0).to_device(device);
    let mut out = model.forward(&on(&ids[..prefill]), &mut cache).unwrap();
    for pos in prefill - 1..ids.len() {
        let ours: Vec<f32> = Vec::try_from(out.reshape([-1]).to_device(Device::Cpu)).unwrap();
        let want = &logits[pos * vocab..(pos + 1) * vocab];
        let d = ours.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d <= 1e-4, "{name} on {device:?}: position {pos} differs by {d}");
        if pos + 1 < ids.len() {
            out = model.forward(&on(&ids[pos + 1..pos + 2]), &mut cache).unwrap();
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

/// Decoding far past the cache's first allocation (the prefill plus 128 positions, then doubling) gives the logits
/// of a fresh prefill of the same tokens at every step, across both reallocations; the cache reports its real
/// positions, and more bytes reserved than used.
#[test]
fn decoding_through_cache_growth_equals_a_fresh_prefill() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama");
    let model = Llama::from_hf_dir(&dir, Device::Cpu).unwrap();
    let vocab = Safetensors::open(&dir.join("reference.safetensors")).unwrap().tensor_f32("logits").unwrap().1[1];
    let ids: Vec<i64> = (0..300).map(|i| (i * 37 + 11) % vocab as i64).collect();
    let on = |t: &[i64]| Tensor::from_slice(t).unsqueeze(0);
    let prefill = 6;
    let mut cache = KvCache::default();
    let mut out = model.forward(&on(&ids[..prefill]), &mut cache).unwrap();
    let per_position = cache.bytes() / prefill;
    for len in prefill..=ids.len() {
        if [prefill, 100, 134, 135, 136, 268, 269, 270, 300].contains(&len) {
            let fresh = model.forward(&on(&ids[..len]), &mut KvCache::default()).unwrap();
            let d = (&out - &fresh).abs().max().double_value(&[]);
            assert!(d <= 1e-4, "after {len} tokens the cached logits differ by {d}");
            assert_eq!(cache.len(), len as i64);
            assert_eq!(cache.bytes(), len * per_position, "bytes count the real positions");
            assert!(cache.reserved_bytes() >= cache.bytes());
        }
        if len < ids.len() {
            out = model.forward(&on(&ids[len..len + 1]), &mut cache).unwrap();
        }
    }
    assert_eq!(cache.reserved_bytes(), 4 * (prefill + 128) * per_position, "134 positions, doubled twice");
}

mod in_decoder_drop {
    use super::*;
    use tokensieve_models::llama::{LayerDrop, PositionMode, QueryRows};
    use tokensieve_pruners::in_decoder::fastv::FastV;

    fn model() -> (Llama, Vec<i64>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama");
        let model = Llama::from_hf_dir(&dir, Device::Cpu).unwrap();
        let reference = Safetensors::open(&dir.join("reference.safetensors")).unwrap();
        let ids = reference.tensor_f32("input_ids").unwrap().0.iter().map(|&v| v as i64).collect();
        (model, ids)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t.reshape([-1])).unwrap()
    }

    fn diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn keeping_everything_changes_nothing() {
        let (m, ids) = model();
        let x = m.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap();
        let plain = values(&m.forward_embeds(x.shallow_clone(), &mut KvCache::default()).unwrap());
        let mut keep_all = |_: usize, _: &[Vec<f32>], span: std::ops::Range<usize>| (0..span.len()).collect();
        let drop = LayerDrop::once(1, 3..7, &mut keep_all, PositionMode::Original);
        let mut cache = KvCache::default();
        let with = values(&m.forward_embeds_with(x, &mut cache, Some(drop)).unwrap());
        assert!(diff(&plain, &with) <= 1e-6);
        assert_eq!((cache.layer_len(0), cache.layer_len(1)), (10, 10));
    }

    #[test]
    fn dropping_before_layer_zero_equals_removing_the_tokens() {
        let (m, ids) = model();
        // Keep offsets 0 and 3 of the span 3..7: tokens 4 and 5 disappear.
        let reduced: Vec<i64> = ids.iter().enumerate().filter(|(p, _)| *p != 4 && *p != 5).map(|(_, &t)| t).collect();
        let mut plain_cache = KvCache::default();
        let plain = values(&m.forward(&Tensor::from_slice(&reduced).unsqueeze(0), &mut plain_cache).unwrap());
        let mut rule = |_: usize, rows: &[Vec<f32>], _: std::ops::Range<usize>| {
            assert!(rows.is_empty(), "no attention exists before layer 0");
            vec![0, 3]
        };
        let drop = LayerDrop::once(0, 3..7, &mut rule, PositionMode::Contiguous);
        let mut cache = KvCache::default();
        let x = m.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap();
        let dropped = values(&m.forward_embeds_with(x, &mut cache, Some(drop)).unwrap());
        assert!(diff(&plain, &dropped) <= 1e-5, "{}", diff(&plain, &dropped));
        // Decoding continues from the renumbered positions in every layer.
        let next = Tensor::from_slice(&[11i64]).unsqueeze(0);
        let a = values(&m.forward(&next, &mut plain_cache).unwrap());
        let b = values(&m.forward(&next, &mut cache).unwrap());
        assert!(diff(&a, &b) <= 1e-5, "{}", diff(&a, &b));
    }

    #[test]
    fn fastv_shortens_the_cache_of_later_layers() {
        let (m, ids) = model();
        let fastv = FastV { layer: 1, ratio: 0.5 };
        let span = 2..8;
        let mut seen = 0;
        let mut rule = |_: usize, rows: &[Vec<f32>], _: std::ops::Range<usize>| {
            assert_eq!(rows.len(), 1, "FastV reads the last query's row only");
            let row = &rows[0];
            seen = row.len();
            let scores = &row[span.clone()];
            let k = (scores.len() as f64 * (1.0 - fastv.ratio)).round() as usize;
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            let mut kept: Vec<usize> = order.into_iter().take(k).collect();
            kept.sort_unstable();
            assert_eq!(kept, fastv.select(row, span.clone()).unwrap(), "the pruners' FastV rule");
            kept
        };
        let drop = LayerDrop::once(1, 2..8, &mut rule, PositionMode::Original);
        let mut cache = KvCache::default();
        let x = m.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap();
        let logits = values(&m.forward_embeds_with(x, &mut cache, Some(drop)).unwrap());
        assert!(logits.iter().all(|v| v.is_finite()));
        assert_eq!(seen, 10, "the rule saw the last token's attention over all 10 positions");
        assert_eq!((cache.layer_len(0), cache.layer_len(1)), (10, 7));
        let full_bytes = {
            let mut c = KvCache::default();
            let _logits = m.forward(&Tensor::from_slice(&ids).unsqueeze(0), &mut c).unwrap();
            c.bytes()
        };
        assert!(cache.bytes() < full_bytes);
        assert!(m
            .forward_embeds_with(m.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap(), &mut cache, None)
            .is_ok());
    }

    #[test]
    fn stages_shrink_the_span_and_read_the_rows_they_ask_for() {
        let (m, ids) = model();
        let x = m.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap();
        let plain = values(&m.forward_embeds(x.shallow_clone(), &mut KvCache::default()).unwrap());
        // Keeping everything at two stages changes nothing.
        let mut keep_all = |_: usize, _: &[Vec<f32>], span: std::ops::Range<usize>| (0..span.len()).collect();
        let drop = LayerDrop {
            layers: vec![0, 1],
            span: 2..8,
            rows: QueryRows::Last,
            select: &mut keep_all,
            positions: PositionMode::Original,
        };
        let same = values(&m.forward_embeds_with(x.shallow_clone(), &mut KvCache::default(), Some(drop)).unwrap());
        assert!(diff(&plain, &same) <= 1e-6);
        // Stage 0 (before layer 0) keeps 4 of 6, stage 1 keeps 1 of those 4 and reads the text rows after the span.
        let mut calls = Vec::new();
        let mut rule = |stage: usize, rows: &[Vec<f32>], span: std::ops::Range<usize>| {
            calls.push((stage, rows.len(), span.clone()));
            if stage == 1 {
                for (r, row) in rows.iter().enumerate() {
                    let total: f32 = row.iter().sum();
                    assert!((total - 1.0).abs() < 1e-4, "row {r} is a distribution");
                    // Query at position span.end + r sees no later key.
                    assert!(row[span.end + r + 1..].iter().all(|&p| p == 0.0), "row {r} is causal");
                }
            }
            if stage == 0 {
                vec![0, 1, 4, 5]
            } else {
                vec![2]
            }
        };
        let drop = LayerDrop {
            layers: vec![0, 1],
            span: 2..8,
            rows: QueryRows::AfterSpan,
            select: &mut rule,
            positions: PositionMode::Original,
        };
        let mut cache = KvCache::default();
        let _logits = m.forward_embeds_with(x, &mut cache, Some(drop)).unwrap();
        assert_eq!(calls, vec![(0, 0, 2..8), (1, 2, 2..6)], "after stage 0 the span is 4 long; 2 text rows follow it");
        assert_eq!((cache.layer_len(0), cache.layer_len(1)), (8, 5));
        // Layers must be ascending and exist.
        let mut any = |_: usize, _: &[Vec<f32>], span: std::ops::Range<usize>| (0..span.len()).collect();
        let bad = LayerDrop {
            layers: vec![1, 5],
            span: 2..8,
            rows: QueryRows::Last,
            select: &mut any,
            positions: PositionMode::Original,
        };
        let x = m.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap();
        assert!(m.forward_embeds_with(x, &mut KvCache::default(), Some(bad)).is_err());
    }
}

/// Int8 decoder weights ([`tokensieve_models::linear`]): a quarter of the f32 linear bytes, logits within the
/// quantisation error of the dense model at every position (prefill through the dequantised matmul, decode steps
/// through the int8 kernel), and the two int8 paths agree: a 20-token prefill (dequantised weights) gives the
/// logits that feeding the same tokens one by one (the kernel) gives.
#[test]
fn int8_weights_are_a_quarter_of_the_bytes_and_close_to_dense() {
    use tokensieve_models::linear::DecoderWeights;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen2");
    let dense = Llama::from_hf_dir(&dir, Device::Cpu).unwrap();
    let mut int8 = Llama::from_hf_dir(&dir, Device::Cpu).unwrap();
    int8.set_weights(DecoderWeights::Int8).unwrap();
    assert_eq!((dense.weights(), int8.weights()), (DecoderWeights::Dense, DecoderWeights::Int8));
    let ratio = int8.linear_bytes() as f64 / dense.linear_bytes() as f64;
    // A quarter, plus one bf16 or f32 scale per row (576 rows of at most 64 columns here: up to 0.028).
    assert!(ratio > 0.25 && ratio < 0.29, "int8 holds {ratio} of the f32 bytes (weights plus per-row scales)");
    let vocab = Safetensors::open(&dir.join("reference.safetensors")).unwrap().tensor_f32("logits").unwrap().1[1];
    let ids: Vec<i64> = (0..20).map(|i| (i * 37 + 11) % vocab as i64).collect();
    let on = |t: &[i64]| Tensor::from_slice(t).unsqueeze(0);
    let host = |t: &Tensor| Vec::<f32>::try_from(t.reshape([-1])).unwrap();
    let relative = |a: &[f32], b: &[f32]| {
        let err: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
        err / b.iter().map(|y| y * y).sum::<f32>().sqrt()
    };
    let (mut dense_cache, mut int8_cache) = (KvCache::default(), KvCache::default());
    let mut want = host(&dense.forward(&on(&ids[..1]), &mut dense_cache).unwrap());
    let mut got = host(&int8.forward(&on(&ids[..1]), &mut int8_cache).unwrap());
    for pos in 1..ids.len() {
        let e = relative(&got, &want);
        assert!(e > 0.0 && e < 0.05, "position {pos}: int8 logits differ from dense by {e} (relative L2)");
        want = host(&dense.forward(&on(&ids[pos..pos + 1]), &mut dense_cache).unwrap());
        got = host(&int8.forward(&on(&ids[pos..pos + 1]), &mut int8_cache).unwrap());
    }
    let stepped = got;
    let prefilled = host(&int8.forward(&on(&ids), &mut KvCache::default()).unwrap());
    let e = relative(&prefilled, &stepped);
    assert!(e < 0.01, "the int8 kernel and the dequantised matmul differ by {e} (relative L2)");
}
