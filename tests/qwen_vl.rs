//! Qwen2.5-VL and Qwen3-VL through the one engine, on the tiny random checkpoints of `models/tests/fixtures/` and real
//! sample media.
//!
//! Qwen2.5-VL: the prompt's M-RoPE ids are transformers' `get_rope_index` (the fixture's, for one image, two images, a
//! video and a video before an image), kept tokens keep their ids, video frames go through the tower in whole
//! temporal patches batch by batch with the same result as one pass, and pre-LLM pruning, FastV inside the decoder
//! and multi-image prompts run end to end.
//!
//! Qwen3-VL: each temporal patch of a video is its own span after its `<t seconds>` timestamp, the prompt's M-RoPE
//! ids are `get_rope_index`'s (a video, a pruned video, a video before an image), the prompt holds exactly the kept
//! tokens and one timestamp per patch, each patch keeps its share with `BudgetScope::Frame`, and pre-LLM pruning
//! (ToDRE, EVS) and FastV inside the decoder run end to end with DeepStack.
//!
//! The models' numbers against transformers are in `models/tests/qwen2_5_vl_parity.rs` and
//! `models/tests/qwen3_vl_parity.rs`, the preprocessing in `video/tests/preprocess_parity.rs`.

#![cfg(all(feature = "torch", feature = "video"))]

use std::path::PathBuf;
use tokensieve::models::safetensors::Safetensors;
use tokensieve::models::tokenizer::TextTokenizer;
use tokensieve::pipeline::engine::{Engine, EngineChoice};
use tokensieve::pipeline::prompt::{mrope_positions, MRopeSpan};
use tokensieve::pipeline::qa::{BudgetScope, MediaKind, Positions, QaError, QaOptions};
use tokensieve::pruners::{Budget, Layout, Method};

const QWEN2_5_VL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_qwen2_5_vl");
const QWEN3_VL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_qwen3_vl");
/// `<|vision_start|>`, `<|image_pad|>`, `<|video_pad|>` of both fixtures.
const START: i64 = 90;
const IMAGE: i64 = 92;
const VIDEO: i64 = 93;

fn asset(name: &str) -> PathBuf {
    tokensieve::assets::require(name).expect("sample assets (run `make setup`)")
}

fn ints(r: &Safetensors, name: &str) -> Vec<i64> {
    r.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).0.iter().map(|&v| v as i64).collect()
}

fn engine(model: &str) -> Engine {
    let choice =
        EngineChoice::Torch { device: tch::Device::Cpu, dtype: Some(tch::Kind::Float), weights: Default::default() };
    Engine::load(model.as_ref(), choice).unwrap()
}

#[test]
fn qwen2_5_vl_prompt_ids_are_get_rope_index() {
    let r = Safetensors::open(&PathBuf::from(QWEN2_5_VL).join("reference.safetensors")).unwrap();
    let span = |pad: i64, grid: &[i64], scale: f64| {
        let grid = (grid[0] as usize, grid[1] as usize / 2, grid[2] as usize / 2);
        MRopeSpan { pad, kept: (0..grid.0 * grid.1 * grid.2).collect(), extra: 0, grid, temporal_scale: scale }
    };
    let two = ints(&r, "two_grid");
    let cases = [
        ("image", vec![span(IMAGE, &ints(&r, "image_grid"), 1.0)]),
        ("two", vec![span(IMAGE, &two[..3], 1.0), span(IMAGE, &two[3..], 1.0)]),
        // second_per_grid_t = 1 s, tokens_per_second = 2.
        ("video", vec![span(VIDEO, &ints(&r, "video_grid"), 2.0)]),
        (
            "mixed",
            vec![span(VIDEO, &ints(&r, "mixed_video_grid"), 2.0), span(IMAGE, &ints(&r, "mixed_image_grid"), 1.0)],
        ),
    ];
    for (case, spans) in cases {
        let ids = ints(&r, &format!("{case}_ids"));
        let got = mrope_positions(&ids, START, &spans, false).unwrap();
        let want = ints(&r, &format!("{case}_positions"));
        assert_eq!(got.concat(), want, "{case}");
    }
    // The pruned prompt: the kept columns of the video's ids.
    let kept: Vec<usize> = ints(&r, "pruned_kept").iter().map(|&k| k as usize).collect();
    let spans = [MRopeSpan { kept, ..span(VIDEO, &ints(&r, "video_grid"), 2.0) }];
    let got = mrope_positions(&ints(&r, "pruned_ids"), START, &spans, false).unwrap();
    assert_eq!(got.concat(), ints(&r, "pruned_positions"));
}

#[test]
fn qwen2_5_vl_videos_and_images_run_pruned_before_and_inside_the_decoder() {
    let video = asset("videos/bikes.mp4");
    let info = tokensieve::video::probe(&video).unwrap();
    // Five frames: three temporal patches, the last one repeating frame 5.
    let frames = tokensieve::video::decode_indices_native(&video, &info, &[0, 30, 60, 90, 120]).unwrap();
    let mut engine = engine(QWEN2_5_VL);
    engine.set_encode_batch(Some(64));
    let whole = engine.visual_tokens(&frames, MediaKind::Video).unwrap();
    let Some(Layout::Grid { views: 1, frames: 3, height, width }) = whole.layout else {
        panic!("a video's grid: {:?}", whole.layout)
    };
    assert_eq!(whole.units, (3, height * width));
    // In batches of 2 frames (one temporal patch) the tokens and signals are the one pass's.
    engine.set_encode_batch(Some(2));
    let parts = engine.visual_tokens(&frames, MediaKind::Video).unwrap();
    assert_eq!((parts.layout, parts.units), (whole.layout, whole.units));
    let worst = (&parts.features - &whole.features).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
    assert!(worst < 1e-4, "batched features differ by {worst}");
    let n = whole.features.nrows();

    let ask =
        |opts: &QaOptions, frames: &[tokensieve::video::Frame], kind| engine.ask(frames, kind, "what is there", opts);
    let (_, full) = ask(&QaOptions::new(3), &frames, MediaKind::Video).unwrap();
    let todre = Method::from_spec("todre").unwrap().0;
    let opts = QaOptions { pruners: vec![todre], budget: Budget::Ratio(0.25), ..QaOptions::new(3) };
    let (_, pruned) = ask(&opts, &frames, MediaKind::Video).unwrap();
    let k = pruned.kept.len();
    assert_eq!(k, (n as f64 * 0.25).round() as usize);
    assert_eq!(full.prefill_tokens - pruned.prefill_tokens, n - k, "the prompt lost exactly the pruned tokens");
    // EVS at vLLM's rate 0.5 (no budget given): max(one temporal patch, int(N / 2)) tokens, the first patch whole.
    let evs = Method::from_spec("evs:rate=0.5").unwrap().0;
    let (_, evs) = ask(&QaOptions { pruners: vec![evs], ..QaOptions::new(2) }, &frames, MediaKind::Video).unwrap();
    assert_eq!(evs.kept.len(), (n / 2).max(n / 3));
    assert!((0..n / 3).all(|i| evs.kept.contains(&i)), "the first temporal patch is kept whole");
    // FastV inside the decoder halves the visual span from layer 2 on.
    let fastv = tokensieve::pruners::in_decoder::InDecoder::from_spec("fastv:layer=2,ratio=0.5").unwrap();
    let opts = QaOptions { in_llm: Some(fastv), ..QaOptions::new(2) };
    let (_, dropped) = ask(&opts, &frames, MediaKind::Video).unwrap();
    let layers = &dropped.tokens_per_layer;
    assert_eq!(layers[1] - layers[2], n / 2, "{layers:?}");

    // Images: one photo, the same photo twice (two spans), and a landscape with a square photo (two sizes after
    // smart_resize, see `qwen2_5_vl_images_of_different_sizes_are_spans_of_their_own_grids`).
    let chelsea = tokensieve::video::load_image_native(&asset("images/chelsea.png")).unwrap();
    let astronaut = tokensieve::video::load_image_native(&asset("images/astronaut.png")).unwrap();
    let (_, one) = ask(&QaOptions::new(2), std::slice::from_ref(&chelsea), MediaKind::Images).unwrap();
    let twice = [chelsea.clone(), chelsea.clone()];
    let opts = QaOptions {
        pruners: vec![Method::from_spec("divprune").unwrap().0],
        budget: Budget::Ratio(0.5),
        ..QaOptions::new(2)
    };
    let (_, two) = ask(&opts, &twice, MediaKind::Images).unwrap();
    let per_image = one.visual_tokens[0].1;
    assert_eq!(two.visual_tokens[0].1, 2 * per_image);
    // Two images at half their tokens: one image's worth of tokens and one more wrapped span (start and end).
    assert_eq!(two.prefill_tokens, one.prefill_tokens + 2);
    let (_, mixed) = ask(&QaOptions::new(1), &[chelsea, astronaut], MediaKind::Images).unwrap();
    assert!(mixed.visual_tokens[0].1 > per_image, "{:?}", mixed.visual_tokens);
}

/// Images of different sizes after `smart_resize` (a landscape photo and a square one): each image is encoded at its
/// own grid and is its own span, numbered as `get_rope_index` numbers two grids. The engine's prefill equals the one
/// built by hand from each image alone (the single-image path the parity tests prove) with `mrope_positions` over
/// the two grids; ToDRE at 50 % keeps each image's share under `BudgetScope::Frame`; the rows and the picture follow.
#[test]
fn qwen2_5_vl_images_of_different_sizes_are_spans_of_their_own_grids() {
    use tokensieve::models::llama::{KvCache, Llama};
    let images = ["images/chelsea.png", "images/astronaut.png"]
        .map(|p| tokensieve::video::load_image_native(&asset(p)).unwrap());
    let engine = engine(QWEN2_5_VL);
    let alone: Vec<_> =
        images.iter().map(|i| engine.visual_tokens(std::slice::from_ref(i), MediaKind::Images).unwrap()).collect();
    let grids: Vec<(usize, usize)> = alone
        .iter()
        .map(|v| match v.layout {
            Some(Layout::Grid { views: 1, frames: 1, height, width }) => (height, width),
            other => panic!("one image's grid: {other:?}"),
        })
        .collect();
    assert_ne!(grids[0], grids[1], "the fixture's two photos resize to two grids");
    let both = engine.visual_tokens(&images, MediaKind::Images).unwrap();
    assert_eq!((both.ragged.as_deref(), both.layout, both.units), (Some(&grids[..]), None, (2, 0)));
    let n = [alone[0].features.nrows(), alone[1].features.nrows()];
    assert_eq!(both.unit_starts(), vec![0, n[0], n[0] + n[1]]);
    let joined = ndarray::concatenate(ndarray::Axis(0), &[alone[0].features.view(), alone[1].features.view()]).unwrap();
    assert_eq!(both.features, joined, "each image's tokens as it gives them alone");

    // The prefill by hand: the raw prompt's two spans expanded to each image's count, the ids numbered over both
    // grids, the tokens written at the placeholders.
    let span = "<|vision_start|><|image_pad|><|vision_end|>";
    let raw = format!("{span} and {span} what is there");
    let got = engine.prefill(&images, MediaKind::Images, &raw, true).unwrap();
    let expanded = raw.replacen("<|image_pad|>", &"<|image_pad|>".repeat(n[0]), 1).replacen(
        &format!("{span} what"),
        &format!("<|vision_start|>{}<|vision_end|> what", "<|image_pad|>".repeat(n[1])),
        1,
    );
    let tokenizer = TextTokenizer::from_file(&PathBuf::from(QWEN2_5_VL).join("tokenizer.json")).unwrap();
    let ids: Vec<i64> = tokenizer.encode(&expanded).unwrap().iter().map(|&t| t as i64).collect();
    assert_eq!(got.prompt_tokens, ids.len());
    let spans: Vec<MRopeSpan> = grids
        .iter()
        .zip(n)
        .map(|(&(h, w), count)| MRopeSpan {
            pad: IMAGE,
            kept: (0..count).collect(),
            extra: 0,
            grid: (1, h, w),
            temporal_scale: 1.0,
        })
        .collect();
    let positions = mrope_positions(&ids, START, &spans, false).unwrap();
    let text = Llama::from_hf_dir_as(QWEN2_5_VL.as_ref(), tch::Device::Cpu, tch::Kind::Float).unwrap();
    let rows = tch::Tensor::from_slice(joined.as_slice().unwrap()).reshape([joined.nrows() as i64, -1]);
    let ids_t = tch::Tensor::from_slice(&ids).unsqueeze(0);
    let embeds = tokensieve::models::llava::merge_at(&text, &ids_t, &[(IMAGE, &rows)]).unwrap();
    let want = text
        .forward_embeds_positioned(
            embeds,
            &tokensieve::models::positions::PositionIds::MRope(positions),
            &mut KvCache::default(),
            None,
        )
        .unwrap();
    let want: Vec<f32> = Vec::try_from(want.reshape([-1])).unwrap();
    let d = got.logits.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d <= 1e-5, "the engine's prefill differs from the hand-built one by {d}");

    // Pruned with each image's share: the kept rows split by the images' boundaries.
    let opts = QaOptions {
        pruners: vec![Method::from_spec("todre").unwrap().0],
        budget: Budget::Ratio(0.5),
        scope: BudgetScope::Frame,
        ..QaOptions::new(1)
    };
    let (_, record) = engine.ask(&images, MediaKind::Images, "what is there", &opts).unwrap();
    let k = ((n[0] + n[1]) as f64 * 0.5).round_ties_even() as usize;
    let first = record.kept.iter().filter(|&&o| o < n[0]).count();
    assert_eq!((first, record.kept.len() - first), (k.div_ceil(2), k / 2), "{:?}", record.kept);
}

/// One span per temporal patch of `grid` (merged `(t, h, w)`), each a one-frame grid, keeping `kept` (offsets over
/// the whole video in prompt order).
fn patch_spans(pad: i64, grid: (usize, usize, usize), kept: &[usize]) -> Vec<MRopeSpan> {
    let per = grid.1 * grid.2;
    (0..grid.0)
        .map(|p| MRopeSpan {
            pad,
            kept: kept.iter().filter(|&&k| k / per == p).map(|&k| k - p * per).collect(),
            extra: 0,
            grid: (1, grid.1, grid.2),
            temporal_scale: 1.0,
        })
        .collect()
}

#[test]
fn qwen3_vl_prompt_ids_are_get_rope_index() {
    let r = Safetensors::open(&PathBuf::from(QWEN3_VL).join("reference.safetensors")).unwrap();
    let merged = |name: &str| {
        let g = ints(&r, name);
        (g[0] as usize, g[1] as usize / 2, g[2] as usize / 2)
    };
    let all = |g: (usize, usize, usize)| (0..g.0 * g.1 * g.2).collect::<Vec<_>>();
    let video = merged("video_grid");
    let image = merged("mixed_image_grid");
    let mixed_video = merged("mixed_video_grid");
    let mut mixed = patch_spans(VIDEO, mixed_video, &all(mixed_video));
    mixed.extend(patch_spans(IMAGE, image, &all(image)));
    let kept: Vec<usize> = ints(&r, "pruned_kept").iter().map(|&k| k as usize).collect();
    let cases = [
        ("video", patch_spans(VIDEO, video, &all(video))),
        ("pruned", patch_spans(VIDEO, video, &kept)),
        ("mixed", mixed),
    ];
    for (case, spans) in cases {
        let got = mrope_positions(&ints(&r, &format!("{case}_ids")), START, &spans, false).unwrap();
        assert_eq!(got.concat(), ints(&r, &format!("{case}_positions")), "{case}");
    }
}

#[test]
fn qwen3_vl_videos_run_per_patch_with_timestamps_pruned_before_and_inside_the_decoder() {
    let video = asset("videos/bikes.mp4");
    let info = tokensieve::video::probe(&video).unwrap();
    // Four frames: two temporal patches.
    let frames = tokensieve::video::decode_indices_native(&video, &info, &[0, 30, 60, 90]).unwrap();
    let engine = engine(QWEN3_VL);
    let whole = engine.visual_tokens(&frames, MediaKind::Video).unwrap();
    let Some(Layout::Grid { views: 1, frames: 2, height, width }) = whole.layout else {
        panic!("a video's grid: {:?}", whole.layout)
    };
    let n = whole.features.nrows();
    assert_eq!((whole.units, n), ((2, height * width), 2 * height * width));
    let planes = whole.deepstack.as_ref().expect("Qwen3-VL's DeepStack planes");
    assert_eq!(planes.nrows(), n, "one plane row per visual token");

    let question = "what is there";
    let ask = |opts: &QaOptions, frames: &[tokensieve::video::Frame], kind| engine.ask(frames, kind, question, opts);
    let (_, full) = ask(&QaOptions::new(2), &frames, MediaKind::Video).unwrap();
    // The prompt: the one-image prompt's text, then per temporal patch its timestamp and a wrapped span.
    let (_, image) = ask(&QaOptions::new(1), &frames[..1], MediaKind::Images).unwrap();
    let tokenizer = TextTokenizer::from_hf_dir(QWEN3_VL.as_ref()).unwrap();
    let times: Vec<f64> = frames.iter().map(|f| f.timestamp).collect();
    let stamp = |p: usize| (times[2 * p] + times[2 * p + 1]) / 2.0;
    let stamps: usize = (0..2).map(|p| tokenizer.encode(&format!("<{:.1} seconds>", stamp(p))).unwrap().len()).sum();
    let text = image.prefill_tokens - image.visual_tokens[0].1;
    assert_eq!(full.prefill_tokens, text + n + 2 + stamps, "one more start/end pair and the timestamps");

    // ToDRE at 25 %: the prompt loses exactly the pruned tokens, the timestamps stay.
    let todre = Method::from_spec("todre").unwrap().0;
    let opts = QaOptions { pruners: vec![todre.clone()], budget: Budget::Ratio(0.25), ..QaOptions::new(2) };
    let (_, pruned) = ask(&opts, &frames, MediaKind::Video).unwrap();
    let k = pruned.kept.len();
    assert_eq!(k, (n as f64 * 0.25).round() as usize);
    assert_eq!(full.prefill_tokens - pruned.prefill_tokens, n - k);
    // Each temporal patch keeping its share (the per-patch counts, and so the prompt, known before encoding).
    let opts = QaOptions {
        pruners: vec![todre.clone()],
        budget: Budget::Ratio(0.25),
        scope: BudgetScope::Frame,
        ..QaOptions::new(1)
    };
    let (_, shared) = ask(&opts, &frames, MediaKind::Video).unwrap();
    let first = shared.kept.iter().filter(|&&i| i < n / 2).count();
    assert_eq!((first, shared.kept.len() - first), (k.div_ceil(2), k / 2), "{:?}", shared.kept);
    assert_eq!(shared.prefill_tokens, pruned.prefill_tokens);
    // A method that compares frames needs them together.
    let dycoke = Method::from_spec("dycoke").unwrap().0;
    let opts = QaOptions { pruners: vec![dycoke], scope: BudgetScope::Frame, ..QaOptions::new(1) };
    match ask(&opts, &frames, MediaKind::Video) {
        Err(QaError::Unsupported { setting, .. }) => assert!(setting.contains("dycoke"), "{setting}"),
        other => panic!("dycoke per frame: {:?}", other.map(|r| r.0)),
    }
    // Renumbered positions change the logits, not the prompt.
    let renumbered = |positions| QaOptions {
        pruners: vec![todre.clone()],
        budget: Budget::Ratio(0.25),
        positions,
        keep_logits: true,
        ..QaOptions::new(1)
    };
    let (_, contiguous) = ask(&renumbered(Positions::Contiguous), &frames, MediaKind::Video).unwrap();
    assert_eq!((contiguous.kept.clone(), contiguous.prefill_tokens), (pruned.kept.clone(), pruned.prefill_tokens));
    let original = ask(&renumbered(Positions::Original), &frames, MediaKind::Video).unwrap().1.first_logits.unwrap();
    let moved = contiguous.first_logits.unwrap();
    assert!(original.iter().zip(&moved).any(|(a, b)| (a - b).abs() > 1e-6), "positions reach the logits");

    // EVS at rate 0.5: the first temporal patch whole, int(N / 2) tokens.
    let evs = Method::from_spec("evs:rate=0.5").unwrap().0;
    let (_, evs) = ask(&QaOptions { pruners: vec![evs], ..QaOptions::new(2) }, &frames, MediaKind::Video).unwrap();
    assert_eq!(evs.kept.len(), n / 2);
    assert!((0..n / 2).all(|i| evs.kept.contains(&i)), "the first temporal patch is kept whole");

    // FastV inside the decoder: the droppable span runs from the first video row to the last, so the second
    // patch's timestamp and wrapping tokens are in it; half of it goes from layer 2 on.
    let fastv = tokensieve::pruners::in_decoder::InDecoder::from_spec("fastv:layer=2,ratio=0.5").unwrap();
    let opts = QaOptions { in_llm: Some(fastv), ..QaOptions::new(2) };
    let (_, dropped) = ask(&opts, &frames, MediaKind::Video).unwrap();
    let layers = &dropped.tokens_per_layer;
    let span = n + 2 + tokenizer.encode(&format!("<{:.1} seconds>", stamp(1))).unwrap().len();
    let dropped_rows = span - (span as f64 * 0.5).round_ties_even() as usize;
    assert_eq!(layers[1] - layers[2], dropped_rows, "{layers:?}");
    assert_eq!(layers[0], full.prefill_tokens);
}
