//! The dual-encoder relevance providers end to end, on a SigLIP built so that the answer is known
//! (tests/fixtures/make_constructed_siglip.py: a frame's embedding is its colour, the words `red`, `green`, `blue`
//! embed as those colours) and a video the test encodes: blue frames, then red ones, then green ones. The checkpoint
//! runs on libtorch, its export (tests/fixtures/constructed_siglip_onnx) on ONNX Runtime, with the same answers.

#![cfg(all(any(feature = "torch", feature = "onnx"), feature = "video"))]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[cfg(feature = "torch")]
const CONSTRUCTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/constructed_siglip");
#[cfg(feature = "torch")]
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures");

fn tokensieve(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokensieve")).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// 40 frames of 32 x 32 at 10 fps, lossless: 0-14 blue, 15-19 red, 20-39 green.
fn colour_video(dir: &Path) -> PathBuf {
    let path = dir.join("colours.mkv");
    let colour = |i: usize| match i {
        0..=14 => [0u8, 0, 255],
        15..=19 => [255, 0, 0],
        _ => [0, 255, 0],
    };
    let frames: Vec<u8> = (0..40).flat_map(|i| (0..32 * 32).flat_map(move |_| colour(i))).collect();
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "32x32"])
        .args(["-r", "10", "-i", "-", "-c:v", "ffv1"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("the ffmpeg binary is missing: run `make setup`");
    child.stdin.take().expect("piped").write_all(&frames).expect("write frames");
    assert!(child.wait().expect("ffmpeg runs").success());
    path
}

#[cfg(feature = "torch")]
fn f2c(video: &Path, query: &str) -> serde_json::Value {
    f2c_with(CONSTRUCTED, video, query)
}

/// `sample --sampler f2c` with the constructed SigLIP at `model` (checkpoint or export): one anchor, 144 tokens.
fn f2c_with(model: &str, video: &Path, query: &str) -> serde_json::Value {
    let relevance = format!("siglip:{model}");
    let (code, out, err) = tokensieve(&[
        "sample",
        video.to_str().unwrap(),
        "--sampler",
        "f2c",
        "--relevance",
        &relevance,
        "--query",
        query,
        "--candidates",
        "40",
        "--anchors",
        "1",
        "--budget",
        "144",
        "--device",
        "cpu",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

#[cfg(feature = "torch")]
fn indices(v: &serde_json::Value) -> Vec<u64> {
    v["frames"].as_array().unwrap().iter().map(|f| f["index"].as_u64().unwrap()).collect()
}

#[cfg(feature = "torch")]
#[test]
fn f2c_picks_the_clip_where_the_question_is_on_screen() {
    let dir = tempfile::tempdir().unwrap();
    let video = colour_video(dir.path());
    let red = f2c(&video, "what is the red car ?");
    let details = &red["details"];
    assert_eq!(details["relevance"], format!("siglip:{CONSTRUCTED}"));
    assert_eq!(details["query"], "what is the red car ?");
    // Every candidate's score: 1 on the red frames, -1/3 elsewhere (the construction's cosines, through the real
    // tokenizer, image processor and both towers).
    let scores = details["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 40);
    for s in scores {
        let (i, score) = (s["index"].as_u64().unwrap(), s["score"].as_f64().unwrap());
        let want = if (15..=19).contains(&i) { 1.0 } else { -1.0 / 3.0 };
        assert!((score - want).abs() < 1e-4, "frame {i}: score {score}, expected {want}");
    }
    // The budget (144 tokens, one anchor) buys a clip of 4 frames at 168 px (36 tokens each) around the first red
    // frame, the best local maximum.
    assert_eq!(details["anchors"], serde_json::json!([15]));
    assert_eq!((details["clip_len"].as_u64(), details["resolution"].as_u64()), (Some(4), Some(168)));
    let picked = indices(&red);
    assert_eq!(picked.len(), 4, "{picked:?}");
    assert!(picked.contains(&15) && picked.iter().all(|i| (13..=17).contains(i)), "{picked:?}");
    // The same run asking about green anchors at the first green frame instead.
    let green = f2c(&video, "what colour is the green car ?");
    assert_eq!(green["details"]["anchors"], serde_json::json!([20]));
    assert!(indices(&green).contains(&20) && indices(&green).iter().all(|i| (18..=22).contains(i)));
}

#[cfg(feature = "torch")]
#[test]
fn dcode_embeds_its_candidates_with_the_dual_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let video = colour_video(dir.path());
    let relevance = format!("siglip:{CONSTRUCTED}");
    let (code, out, err) = tokensieve(&[
        "sample",
        video.to_str().unwrap(),
        "--sampler",
        "dcode",
        "--relevance",
        &relevance,
        "--frames",
        "4",
        "--candidates",
        "40",
        "--uniform-ratio",
        "0.5",
        "--device",
        "cpu",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["details"]["embedder"], relevance);
    let picked = indices(&v);
    assert_eq!(picked.len(), 4);
    // Two uniform frames (0: blue, 39: green), then the frame least similar on average to them: the first red one
    // (cos -1/3 to both, where blue and green frames have 1 to one of them).
    assert!(picked.contains(&0) && picked.contains(&39) && picked.contains(&15), "{picked:?}");
}

#[cfg(feature = "torch")]
#[test]
fn wrong_checkpoints_and_missing_inputs_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let video = colour_video(dir.path());
    let video = video.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["sample", video, "--device", "cpu"];
        args.extend_from_slice(extra);
        tokensieve(&args)
    };
    let vision_only = format!("clip:{FIXTURES}/tiny_clip");
    let (code, _, err) = run(&["--sampler", "f2c", "--relevance", &vision_only, "--query", "red"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("clip_vision_model") && err.contains("both the vision and the text tower"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    let wrong_family = format!("clip:{CONSTRUCTED}");
    let (code, _, err) = run(&["--sampler", "f2c", "--relevance", &wrong_family, "--query", "red"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("use --relevance siglip:"), "{err}");
    let (code, _, err) = run(&["--sampler", "f2c", "--relevance", &format!("siglip:{CONSTRUCTED}")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--query"), "{err}");
    let (code, _, err) = run(&["--sampler", "uniform", "--relevance", &format!("siglip:{CONSTRUCTED}")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is for --sampler f2c"), "{err}");
}

#[cfg(feature = "torch")]
const TINY_LLAVA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_llava");
#[cfg(feature = "torch")]
const TINY_ONEVISION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_onevision");
#[cfg(feature = "torch")]
const TINY_QWEN2_5_VL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_qwen2_5_vl");

/// A 64 x 64 picture: the top-left quadrant red, the rest blue.
fn quadrant_picture(dir: &Path) -> PathBuf {
    let path = dir.join("quadrant.png");
    let rgb: Vec<u8> = (0..64)
        .flat_map(|y| (0..64).flat_map(move |x| if x < 32 && y < 32 { [255u8, 0, 0] } else { [0, 0, 255] }))
        .collect();
    image::save_buffer(&path, &rgb, 64, 64, image::ExtendedColorType::Rgb8).unwrap();
    path
}

#[cfg(feature = "torch")]
fn ask(model: &str, media: &[&str], pruner: &str, keep: usize, question: &str) -> serde_json::Value {
    let relevance = format!("siglip:{CONSTRUCTED}");
    let keep = keep.to_string();
    let mut args = vec!["ask", "--model", model, "--device", "cpu", "--pruner", pruner, "--keep", &keep];
    args.extend_from_slice(media);
    args.extend(["--relevance", &relevance, "--max-new-tokens", "1", "--json", question]);
    let (code, out, err) = tokensieve(&args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap()
}

#[cfg(feature = "torch")]
/// `ask` with the constructed SigLIP and `args`, which must fail; its stderr.
fn refused(args: &[&str]) -> String {
    let relevance = format!("siglip:{CONSTRUCTED}");
    let mut all = vec!["ask", "--device", "cpu", "--ratio", "0.5", "--relevance", &relevance];
    all.extend_from_slice(args);
    all.push("red");
    let (code, _, err) = tokensieve(&all);
    assert_ne!(code, 0, "{all:?} ran");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "one line: {err}");
    err
}

/// `bench --json` on the CPU, one repeat of two new tokens, asking "red" with the constructed SigLIP, and `args`.
#[cfg(feature = "torch")]
fn bench(dir: &Path, args: &[&str]) -> serde_json::Value {
    let relevance = format!("siglip:{CONSTRUCTED}");
    let plot = dir.join("b.svg");
    let mut all = vec!["bench", "--device", "cpu", "--repeats", "1", "--new-tokens", "2", "--question", "red"];
    all.extend(["--relevance", &relevance, "--plot", plot.to_str().unwrap(), "--json"]);
    all.extend_from_slice(args);
    let (code, stdout, err) = tokensieve(&all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(stdout.trim()).unwrap()
}

fn kept(answer: &serde_json::Value) -> Vec<usize> {
    answer["record"]["kept"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect()
}

#[cfg(feature = "torch")]
fn encoder_tokens(answer: &serde_json::Value) -> usize {
    answer["record"]["visual_tokens"][0][1].as_u64().unwrap() as usize
}

/// The token indices of a `side x side` grid's top-left quadrant.
fn top_left(side: usize) -> Vec<usize> {
    (0..side / 2).flat_map(|r| (0..side / 2).map(move |c| r * side + c)).collect()
}

#[cfg(feature = "torch")]
#[test]
fn query_keeps_the_region_the_question_names_on_llava_and_qwen() {
    let dir = tempfile::tempdir().unwrap();
    let picture = quadrant_picture(dir.path());
    let image = ["--image", picture.to_str().unwrap()];
    for model in [TINY_LLAVA, TINY_QWEN2_5_VL] {
        // The square picture's token grid (LLaVA: 4 x 4; Qwen-VL: its smart-resized merged grid).
        let probe = ask(model, &image, "query:recovery=off", 1, "red");
        let side = (encoder_tokens(&probe) as f64).sqrt() as usize;
        assert_eq!(side * side, encoder_tokens(&probe), "{model}: a square grid");
        let quadrant = top_left(side);
        let red = ask(model, &image, "query:recovery=off", quadrant.len(), "what is the red car ?");
        assert_eq!(kept(&red), quadrant, "{model}: the red quadrant");
        let notes = red["record"]["notes"].to_string();
        assert!(notes.contains(&format!("siglip:{CONSTRUCTED} text embeddings")), "{notes}");
        assert!(notes.contains("layer -1 patch embeddings"), "{notes}");
        let blue = ask(model, &image, "query:recovery=off", quadrant.len(), "blue");
        assert!(kept(&blue).iter().all(|i| !quadrant.contains(i)), "{model}: blue keeps no red token");
        // CDPruner reads layer -2 (its official tower layer). Its first pick is the token of highest scaled
        // relevance; the official relevance is the *negative* cosine (`sign=-1`, tuned to CLIP), so for "red" it
        // starts outside the red quadrant, and with `sign=1` inside it.
        let cd = ask(model, &image, "cdpruner", 1, "red");
        assert!(!quadrant.contains(&kept(&cd)[0]), "{model}: {:?}", kept(&cd));
        assert!(cd["record"]["notes"].to_string().contains("layer -2 patch embeddings"));
        let cd = ask(model, &image, "cdpruner:sign=1", 1, "red");
        assert!(quadrant.contains(&kept(&cd)[0]), "{model}: {:?}", kept(&cd));
    }
}

#[cfg(feature = "torch")]
#[test]
fn query_finds_the_frame_on_onevision_videos_and_refuses_any_resolution_images() {
    let dir = tempfile::tempdir().unwrap();
    let video = colour_video(dir.path());
    // Frames 0, 5, 11, 16, 22, 27, 33, 39 of 40: only frame 16 (the fourth) is red.
    let media = ["--video", video.to_str().unwrap(), "--frames", "8"];
    let probe = ask(TINY_ONEVISION, &media, "query:recovery=off", 1, "red");
    let per_frame = encoder_tokens(&probe) / 8;
    let red = ask(TINY_ONEVISION, &media, "query:recovery=off", per_frame, "red");
    assert_eq!(kept(&red), (3 * per_frame..4 * per_frame).collect::<Vec<_>>());
    let green = ask(TINY_ONEVISION, &media, "query:recovery=off", per_frame, "green");
    assert!(kept(&green).iter().all(|&i| i >= 4 * per_frame), "{:?}", kept(&green));
    // A query-agnostic chain says the provider went unused.
    let todre = ask(TINY_ONEVISION, &media, "todre", per_frame, "red");
    assert!(todre["record"]["notes"].to_string().contains("unused, the chain is query-agnostic"));
    // One OneVision image is packed from any-resolution views: refused in one line.
    let picture = quadrant_picture(dir.path());
    let err = refused(&["--model", TINY_ONEVISION, "--image", picture.to_str().unwrap(), "--pruner", "query"]);
    assert!(err.contains("any-resolution"), "{err}");
}

/// The colour video in `dir`, tiny_onevision's tokens per frame, and an F2C spec whose budget buys one key clip of
/// four frames at the model's one resolution.
#[cfg(feature = "torch")]
fn key_clip(dir: &Path) -> (PathBuf, usize, String) {
    let video = colour_video(dir);
    let probe = ask(TINY_ONEVISION, &["--video", video.to_str().unwrap(), "--frames", "1"], "todre", 1, "red");
    let per_frame = encoder_tokens(&probe);
    (video, per_frame, format!("f2c:candidates=40,anchors=1,budget={}", 4 * per_frame))
}

#[cfg(feature = "torch")]
#[test]
fn ask_samples_key_clips_with_f2c_and_the_record_shows_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (video, per_frame, sampler) = key_clip(dir.path());
    let video = video.to_str().unwrap();
    let run =
        |question: &str| ask(TINY_ONEVISION, &["--video", video, "--sampler", &sampler], "todre", per_frame, question);
    let red = run("what is the red car ?");
    let record = &red["record"];
    assert_eq!(record["sampler"], "f2c");
    let note = &record["sampler_note"];
    assert_eq!(note["anchors"], serde_json::json!([15]), "{note}");
    assert_eq!((note["clip_len"].as_u64(), note["tokens"].as_u64()), (Some(4), Some(4 * per_frame as u64)));
    assert_eq!(note["relevance"], format!("siglip:{CONSTRUCTED}"));
    assert_eq!(note["scores"].as_array().unwrap().len(), 40);
    let frames: Vec<u64> = record["frame_indices"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(frames.len() == 4 && frames.contains(&15) && frames.iter().all(|i| (13..=17).contains(i)), "{frames:?}");
    assert_eq!(encoder_tokens(&red), 4 * per_frame);
    let green = run("green");
    assert_eq!(green["record"]["sampler_note"]["anchors"], serde_json::json!([20]));
    // Without a dual encoder, and on a native-resolution model, F2C is refused in one line.
    let (code, _, err) = tokensieve(&["ask", "--model", TINY_ONEVISION, "--video", video, "--sampler", "f2c", "q"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs a dual encoder"), "{err}");
    let err = refused(&["--model", TINY_QWEN2_5_VL, "--video", video, "--sampler", "f2c"]);
    assert!(err.contains("native resolution"), "{err}");
}

#[cfg(feature = "torch")]
#[test]
fn compress_and_bench_take_the_dual_encoder_and_ask_embeds_dcode_candidates_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let picture = quadrant_picture(dir.path());
    let picture = picture.to_str().unwrap();
    let relevance = format!("siglip:{CONSTRUCTED}");
    let out = dir.path().join("c");
    let (code, stdout, err) = tokensieve(&[
        "compress",
        "--model",
        TINY_LLAVA,
        "--image",
        picture,
        "--pruner",
        "query:recovery=off",
        "--keep",
        "4",
        "--relevance",
        &relevance,
        "--out",
        out.to_str().unwrap(),
        "--json",
        "what is the red car ?",
    ]);
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(record["kept"], serde_json::json!(top_left(4)), "{record}");
    assert!(record["query"].as_str().unwrap().starts_with(&format!("the question's {relevance} text embeddings")));
    // The heat panel beside the kept one: red (most relevant) over the red quadrant.
    let sheet = image::open(out.join("kept.png")).unwrap().to_rgb8();
    let (w, h) = (sheet.width() / 2, sheet.height());
    let heat = |x: u32, y: u32| sheet.get_pixel(w + x, y).0;
    let (hot, cold) = (heat(w / 8, h / 8), heat(7 * w / 8, 7 * h / 8));
    assert!(hot[0] > hot[2] && cold[2] > cold[0], "hot {hot:?}, cold {cold:?}");
    let (code, _, err) = tokensieve(&[
        "compress",
        "--model",
        TINY_LLAVA,
        "--image",
        picture,
        "--pruner",
        "query",
        "--keep",
        "4",
        "--relevance",
        &relevance,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("none was given"), "{err}");
    // bench: every budget's run reads the question through the dual encoder.
    let v = bench(
        dir.path(),
        &["--model", TINY_LLAVA, "--image", picture, "--budgets", "100%,25%", "--pruner", "query:recovery=off"],
    );
    let pruned = &v["rows"][1];
    assert_eq!(pruned["kept"], serde_json::json!(top_left(4)), "{pruned}");
    assert!(pruned["notes"].to_string().contains(&format!("{relevance} text embeddings")));
    // ask --sampler dcode with a dual encoder embeds its candidates with it.
    let video = colour_video(dir.path());
    let answer = ask(
        TINY_ONEVISION,
        &["--video", video.to_str().unwrap(), "--sampler", "dcode:frames=4,candidates=40,uniform_ratio=0.5"],
        "todre",
        8,
        "red",
    );
    let note = &answer["record"]["sampler_note"];
    assert_eq!(note["embedder"], relevance, "{note}");
    let frames: Vec<u64> =
        answer["record"]["frame_indices"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(frames.contains(&0) && frames.contains(&15) && frames.contains(&39), "{frames:?}");
}

#[cfg(feature = "torch")]
#[test]
fn eval_samples_each_video_with_f2c_against_its_prompt_and_records_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let (video, per_frame, sampler) = key_clip(dir.path());
    // MLVU's JSON layout: the question names the colour on screen in frames 15-19 only.
    let mlvu = dir.path().join("MLVU");
    std::fs::create_dir_all(mlvu.join("json")).unwrap();
    std::fs::create_dir_all(mlvu.join("video/4_count")).unwrap();
    std::fs::copy(&video, mlvu.join("video/4_count/colours.mkv")).unwrap();
    let q = serde_json::json!([{"video": "colours.mkv", "duration": 4.0, "question": "what is the red car ?",
        "candidates": ["blue", "green", "red"], "answer": "red", "question_type": "count"}]);
    std::fs::write(mlvu.join("json/4_count.json"), q.to_string()).unwrap();
    let out = dir.path().join("out");
    let relevance = format!("siglip:{CONSTRUCTED}");
    let keep = per_frame.to_string();
    let (code, stdout, err) = tokensieve(&[
        "eval",
        "--task",
        "mlvu",
        "--data",
        mlvu.join("json").to_str().unwrap(),
        "--data-root",
        mlvu.to_str().unwrap(),
        "--model",
        TINY_ONEVISION,
        "--max-new-tokens",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--sampler",
        &sampler,
        "--relevance",
        &relevance,
        "--pruner",
        "query:recovery=off",
        "--keep",
        &keep,
    ]);
    assert_eq!(code, 0, "{err}");
    let results: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results["config"]["relevance"], relevance);
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(out.join("samples_mlvu.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    let record = &line["record"];
    // The prompt holds the options too (`red` among them), as F2C's query does; the red frames still win.
    assert_eq!(line["sampler_note"]["anchors"], serde_json::json!([15]), "{line}");
    assert_eq!(line["frame_indices"], serde_json::json!([14, 15, 16, 17]));
    assert!(record["notes"].to_string().contains(&format!("{relevance} text embeddings")), "{record}");
}

#[cfg(feature = "onnx")]
const CONSTRUCTED_ONNX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/constructed_siglip_onnx");
#[cfg(feature = "onnx")]
const TINY_LLAVA_ONNX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_llava_onnx");

#[cfg(feature = "onnx")]
#[test]
fn the_exported_dual_encoder_gives_the_same_answers_on_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let video = colour_video(dir.path());
    let red = f2c_with(CONSTRUCTED_ONNX, &video, "what is the red car ?");
    assert_eq!(red["details"]["anchors"], serde_json::json!([15]), "{red}");
    for s in red["details"]["scores"].as_array().unwrap() {
        let (i, score) = (s["index"].as_u64().unwrap(), s["score"].as_f64().unwrap());
        let want = if (15..=19).contains(&i) { 1.0 } else { -1.0 / 3.0 };
        assert!((score - want).abs() < 1e-4, "frame {i}: score {score}, expected {want}");
    }
    // The ONNX VLM export with the ONNX dual encoder: the red quadrant of tiny_llava's 4 x 4 grid.
    let picture = quadrant_picture(dir.path());
    let relevance = format!("siglip:{CONSTRUCTED_ONNX}");
    let (code, out, err) = tokensieve(&[
        "ask",
        "--backend",
        "onnx",
        "--model",
        TINY_LLAVA_ONNX,
        "--image",
        picture.to_str().unwrap(),
        "--pruner",
        "query:recovery=off",
        "--keep",
        "4",
        "--relevance",
        &relevance,
        "--max-new-tokens",
        "1",
        "--json",
        "red",
    ]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(kept(&answer), top_left(4), "{answer}");
    #[cfg(feature = "torch")]
    {
        // Both backends of the provider: the same scores.
        let torch = f2c(&video, "what is the red car ?");
        let scores = |v: &serde_json::Value| -> Vec<f64> {
            v["details"]["scores"].as_array().unwrap().iter().map(|s| s["score"].as_f64().unwrap()).collect()
        };
        let d = scores(&torch).iter().zip(scores(&red)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(d < 1e-5, "torch and onnx providers differ by {d}");
    }
}

#[cfg(feature = "torch")]
#[test]
fn compress_and_bench_sample_key_clips_with_f2c() {
    let dir = tempfile::tempdir().unwrap();
    let (video, per_frame, sampler) = key_clip(dir.path());
    let video = video.to_str().unwrap();
    let relevance = format!("siglip:{CONSTRUCTED}");
    let out = dir.path().join("c");
    let compress = |extra: &[&str]| {
        let mut args = vec!["compress", "--model", TINY_ONEVISION, "--video", video, "--sampler", &sampler];
        args.extend(["--pruner", "todre", "--ratio", "0.5", "--out", out.to_str().unwrap(), "--json"]);
        args.extend_from_slice(extra);
        tokensieve(&args)
    };
    let (code, stdout, err) = compress(&["--relevance", &relevance, "what is the red car ?"]);
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let times: Vec<f64> =
        record["frames"].as_array().unwrap().iter().map(|f| f["timestamp"].as_f64().unwrap()).collect();
    assert_eq!(times.len(), 4, "{times:?}");
    assert!(
        times.iter().all(|t| (1.3..=1.75).contains(t)) && times.iter().any(|t| (t - 1.5).abs() < 1e-6),
        "{times:?}"
    );
    let (code, _, err) = compress(&["what is the red car ?"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs a dual encoder"), "{err}");
    let v =
        bench(dir.path(), &["--model", TINY_ONEVISION, "--video", video, "--sampler", &sampler, "--budgets", "100%"]);
    assert_eq!(v["rows"][0]["visual_tokens"].as_u64(), Some(4 * per_frame as u64), "{v}");
}
