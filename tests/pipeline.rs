//! The library's `Pipeline` end to end on the tiny random LLaVA-OneVision fixture and real sample videos: samplers,
//! a pruner chain, in-decoder FastV, budgets, the record, and `ask_all` keeping request order.

#![cfg(all(feature = "torch", feature = "video"))]

use std::path::PathBuf;
use tokensieve::pipeline::builder::{Media, Pipeline, PipelineError};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_onevision");

fn asset(name: &str) -> PathBuf {
    tokensieve::assets::require(name).expect("sample assets (run `make setup`)")
}

#[test]
fn pipeline_records_every_stage_and_budgets_shorten_the_prefill() {
    let video = asset("videos/bikes.mp4");
    let full = Pipeline::builder(MODEL).sampler("uniform:frames=6").unwrap().max_new_tokens(2).build().unwrap();
    let a = full.ask_video(&video, "what is there").unwrap();
    assert_eq!(a.record.sampler.as_deref(), Some("uniform"));
    assert_eq!(a.record.frame_indices.len(), 6);
    assert_eq!(a.record.qa.frames.len(), 6, "one timestamp per frame");
    assert_eq!(a.record.visual_tokens_kept(), 6 * 4, "4x4 patches pooled to 2x2 per frame");
    assert!(a.record.ttft_e2e_ms >= a.record.qa.ttft_ms && a.record.decode_ms > 0.0);
    for stage in ["preprocess", "encode", "prune", "prefill", "generate"] {
        assert!(a.record.qa.stage_ms.contains_key(stage), "{stage} missing: {:?}", a.record.qa.stage_ms);
    }

    // A chain (DivPrune then ToDRE) at 25 %, then FastV inside the decoder.
    let pruned = Pipeline::builder(MODEL)
        .sampler("dcode:frames=6,candidates=18")
        .unwrap()
        .pruner("divprune")
        .unwrap()
        .pruner("todre")
        .unwrap()
        .ratio(0.25)
        .in_llm("fastv:layer=1,ratio=0.5")
        .unwrap()
        .max_new_tokens(2)
        .build()
        .unwrap();
    let b = pruned.ask_video(&video, "what is there").unwrap();
    assert_eq!(b.record.sampler.as_deref(), Some("dcode"));
    assert!(b.record.sampler_note.is_some());
    let stages: Vec<(&str, usize)> = b.record.qa.visual_tokens.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(stages, [("encoder", 24), ("divprune", 6), ("todre", 6)]);
    assert_eq!(a.record.qa.prefill_tokens - b.record.qa.prefill_tokens, 18, "the prefill lost 18 visual positions");
    assert!(b.record.qa.kv_bytes < a.record.qa.kv_bytes);
    // FastV at layer 1 halves the 6 kept visual tokens (and keeps the newline) from layer 1 on.
    let layers = &b.record.qa.tokens_per_layer;
    assert!(layers[1] < layers[0], "{layers:?}");

    // Bad specs are typed errors before any model is loaded.
    assert!(matches!(Pipeline::builder(MODEL).pruner("nope"), Err(PipelineError::Spec(_))));
    assert!(matches!(Pipeline::builder(MODEL).sampler("uniform:frames=0"), Err(PipelineError::Sampler(_))));
    assert!(matches!(Pipeline::builder(MODEL).keep(0).build(), Err(PipelineError::Spec(_))));
}

#[test]
fn ask_all_answers_in_request_order_and_reports_each_failure() {
    let pipeline = Pipeline::builder(MODEL).sampler("uniform:frames=2").unwrap().max_new_tokens(1).build().unwrap();
    let requests = vec![
        (Media::Video(asset("videos/cup.mp4")), "what".to_string()),
        (Media::Video(PathBuf::from("/no/such/video.mp4")), "what".to_string()),
        (Media::Images(vec![asset("images/chelsea.png"), asset("images/coffee.png")]), "what".to_string()),
    ];
    let answers = pipeline.ask_all(&requests);
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0].as_ref().unwrap().record.frame_indices.len(), 2);
    assert!(matches!(answers[1], Err(PipelineError::Video(_))));
    let images = answers[2].as_ref().unwrap();
    assert_eq!((images.record.sampler.clone(), images.record.visual_tokens_kept()), (None, 32));
}

/// Every sampler x a representative set of pruners (selection, diversity, merging, attention-based) x with and
/// without FastV, on the tiny LLaVA (CLIP, so the CLS attention exists): the record's counts agree with the budget
/// and the prefill shrinks by exactly the pruned tokens.
#[test]
fn every_sampler_with_pruners_and_fastv_keeps_the_record_consistent() {
    const LLAVA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_llava");
    let video = asset("videos/bikes.mp4");
    let samplers =
        ["uniform:frames=3", "uniform-interior:frames=3", "fps:rate=0.3,max=3", "dcode:frames=3,candidates=9"];
    let pruners = ["todre", "divprune", "tome", "visionzip", "dycoke"];
    for sampler in samplers {
        let base = Pipeline::builder(LLAVA).sampler(sampler).unwrap().max_new_tokens(1).build().unwrap();
        let full = base.ask_video(&video, "what").unwrap();
        let frames = full.record.frame_indices.len();
        assert!((1..=3).contains(&frames), "{sampler}: {frames} frames");
        let tokens = full.record.visual_tokens_kept();
        assert_eq!(tokens, frames * 16, "{sampler}: 16 patches per frame");
        for pruner in pruners {
            for fastv in [None, Some("fastv:layer=1,ratio=0.5")] {
                let mut b = Pipeline::builder(LLAVA).sampler(sampler).unwrap().pruner(pruner).unwrap().keep(tokens / 2);
                if let Some(spec) = fastv {
                    b = b.in_llm(spec).unwrap();
                }
                let case = format!("{sampler} {pruner} {fastv:?}");
                let a = match b.max_new_tokens(1).build().unwrap().ask_video(&video, "what") {
                    Ok(a) => a,
                    // DyCoke keeps the first frame of each window, which a budget of half may not allow.
                    Err(e) if pruner == "dycoke" => {
                        assert!(e.to_string().contains("dycoke"), "{case}: {e}");
                        continue;
                    }
                    Err(e) => panic!("{case}: {e}"),
                };
                let kept = a.record.visual_tokens_kept();
                assert!(kept <= tokens / 2 && kept > 0, "{case}: kept {kept}");
                assert_eq!(a.record.frame_indices, full.record.frame_indices, "{case}: same frames");
                assert_eq!(full.record.qa.prefill_tokens - a.record.qa.prefill_tokens, tokens - kept, "{case}");
                let layers = &a.record.qa.tokens_per_layer;
                match fastv {
                    Some(_) => assert_eq!(layers[1], layers[0] - kept / 2, "{case}: {layers:?}"),
                    None => assert!(layers.iter().all(|&l| l == a.record.qa.prefill_tokens), "{case}"),
                }
            }
        }
    }
}

/// PyramidDrop's stages and ToDRE stage 2's all-or-nothing drop on a 6-layer random LLaVA-OneVision with the real
/// SigLIP geometry (2 frames -> 2 x 196 pooled tokens + the newline = a 393-token droppable span).
#[test]
fn pyramid_drop_and_todre_stage2_shorten_the_later_layers() {
    use tokensieve::models::random_checkpoint::{write_onevision, OneVisionShape};
    let dir = tempfile::tempdir().unwrap();
    write_onevision(dir.path(), &OneVisionShape::demo(), 0, tokensieve::models::safetensors::StoreAs::F32).unwrap();
    let video = asset("videos/cup.mp4");
    let run = |in_llm: Option<&str>| {
        let mut b = Pipeline::builder(dir.path()).sampler("uniform:frames=2").unwrap().max_new_tokens(1);
        if let Some(spec) = in_llm {
            b = b.in_llm(spec).unwrap();
        }
        b.build().unwrap().ask_video(&video, "what happens").unwrap().record.qa.tokens_per_layer
    };
    let full = run(None);
    let s = full[0];
    assert!(full.iter().all(|&t| t == s));
    // Stages at layers 2 and 4 keep round-half-even(393 x 0.5) = 196, then round(393 x 0.25) = 98.
    assert_eq!(run(Some("pdrop:layers=2/4,lambda=0.5")), vec![s, s, s - 197, s - 197, s - 295, s - 295]);
    // tau = 1: the text's share of attention on vision is always below 1, so every visual token goes after the
    // check layer (floor(7 x 6 / 8) = 5 would leave no later layer, so check at 3); tau = 0: nothing is dropped.
    assert_eq!(run(Some("todre-stage2:tau=1,layer=3")), vec![s, s, s, s, s - 393, s - 393]);
    assert_eq!(run(Some("todre-stage2:tau=0,layer=3")), full);
    let err = Pipeline::builder(dir.path()).in_llm("todre-stage2").unwrap().build().err().unwrap();
    assert!(err.to_string().contains("6 layers"), "{err}");
}

/// Encoding a batch at a time, and frames streamed from the decoder, give what one pass over every frame gives: the
/// tokens, signals, layout and units of a video's frames (one newline at the end) and of separate images (a newline
/// each), down to batches of one view; a streamed video is answered as its decoded frames are.
#[test]
fn batches_and_streams_give_what_one_pass_gives() {
    use tokensieve::pipeline::engine::{Engine, EngineChoice};
    use tokensieve::pipeline::frames::{FrameSource, VideoStream};
    use tokensieve::pipeline::qa::{MediaKind, QaOptions};
    use tokensieve::pruners::{Budget, Method};
    let video = asset("videos/bikes.mp4");
    let info = tokensieve::video::probe(&video).unwrap();
    let indices = [0, 40, 80, 120, 160];
    let frames = tokensieve::video::decode_indices_native(&video, &info, &indices).unwrap();
    let images: Vec<_> = ["images/chelsea.png", "images/coffee.png", "images/rocket.jpg"]
        .iter()
        .map(|p| tokensieve::video::load_image_native(&asset(p)).unwrap())
        .collect();
    let choice =
        EngineChoice::Torch { device: tch::Device::Cpu, dtype: Some(tch::Kind::Float), weights: Default::default() };
    let mut engine = Engine::load(MODEL.as_ref(), choice).unwrap();
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{what}: {worst}");
    };
    for (input, kind) in [(&frames, MediaKind::Video), (&images, MediaKind::Images)] {
        engine.set_encode_batch(Some(64));
        let whole = engine.visual_tokens(input, kind).unwrap();
        for batch in [1, 2] {
            engine.set_encode_batch(Some(batch));
            let parts = engine.visual_tokens(input, kind).unwrap();
            let what = format!("{kind:?} in batches of {batch}");
            assert_eq!(
                (parts.layout, parts.units, parts.newline),
                (whole.layout, whole.units, whole.newline),
                "{what}"
            );
            close(parts.features.as_slice().unwrap(), whole.features.as_slice().unwrap(), &what);
            close(parts.attention.as_deref().unwrap(), whole.attention.as_deref().unwrap(), &what);
        }
    }
    engine.set_encode_batch(Some(2));
    let method = Method::from_spec("todre").unwrap().0;
    let opts = QaOptions { pruners: vec![method], budget: Budget::Ratio(0.25), ..QaOptions::new(3) };
    let (text, decoded) = engine.ask(&frames, MediaKind::Video, "what is there", &opts).unwrap();
    let mut stream = VideoStream::start(&video, &info, &indices);
    assert_eq!(stream.len(), 5);
    let (streamed_text, streamed) =
        engine.ask_source(&mut stream, MediaKind::Video, None, "what is there", &opts, &mut |_| true).unwrap();
    assert_eq!((streamed_text, &streamed.kept, &streamed.frames), (text, &decoded.kept, &decoded.frames));
    assert!(streamed.stage_ms.contains_key("decode") && !decoded.stage_ms.contains_key("decode"));
}
