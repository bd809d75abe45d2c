//! Qwen2.5-VL through the one engine, on the tiny random checkpoint of `models/tests/fixtures/tiny_qwen2_5_vl` and
//! real sample media: the prompt's M-RoPE ids are transformers' `get_rope_index` (the fixture's, for one image, two
//! images, a video and a video before an image), kept tokens keep their ids, video frames go through the tower in
//! whole temporal patches batch by batch with the same result as one pass, and pre-LLM pruning, FastV inside the
//! decoder and multi-image prompts run end to end. The model's numbers against transformers are in
//! `models/tests/qwen2_5_vl_parity.rs`, the preprocessing in `video/tests/preprocess_parity.rs`.

#![cfg(all(feature = "torch", feature = "video"))]

use std::path::PathBuf;
use tokensieve::models::safetensors::Safetensors;
use tokensieve::pipeline::engine::{Engine, EngineChoice};
use tokensieve::pipeline::prompt::{mrope_positions, MRopeSpan};
use tokensieve::pipeline::qa::{MediaKind, QaError, QaOptions};
use tokensieve::pruners::{Budget, Layout, Method};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_qwen2_5_vl");
/// `<|vision_start|>`, `<|image_pad|>`, `<|video_pad|>` of the fixture.
const START: i64 = 90;
const IMAGE: i64 = 92;
const VIDEO: i64 = 93;

fn asset(name: &str) -> PathBuf {
    tokensieve::assets::require(name).expect("sample assets (run `make setup`)")
}

fn ints(r: &Safetensors, name: &str) -> Vec<i64> {
    r.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).0.iter().map(|&v| v as i64).collect()
}

fn engine() -> Engine {
    let choice =
        EngineChoice::Torch { device: tch::Device::Cpu, dtype: Some(tch::Kind::Float), weights: Default::default() };
    Engine::load(MODEL.as_ref(), choice).unwrap()
}

#[test]
fn prompt_ids_are_get_rope_index() {
    let r = Safetensors::open(&PathBuf::from(MODEL).join("reference.safetensors")).unwrap();
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
fn videos_and_images_run_pruned_before_and_inside_the_decoder() {
    let video = asset("videos/bikes.mp4");
    let info = tokensieve::video::probe(&video).unwrap();
    // Five frames: three temporal patches, the last one repeating frame 5.
    let frames = tokensieve::video::decode_indices_native(&video, &info, &[0, 30, 60, 90, 120]).unwrap();
    let mut engine = engine();
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
    // smart_resize: refused with the reason).
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
    match ask(&QaOptions::new(1), &[chelsea, astronaut], MediaKind::Images) {
        Err(QaError::Unsupported { reason, .. }) => assert!(reason.contains("share one size"), "{reason}"),
        other => panic!("two sizes: {:?}", other.map(|r| r.0)),
    }
}
