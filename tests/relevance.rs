//! The dual-encoder relevance providers end to end, on a SigLIP built so that the answer is known
//! (tests/fixtures/make_constructed_siglip.py: a frame's embedding is its colour, the words `red`, `green`, `blue`
//! embed as those colours) and a video the test encodes: blue frames, then red ones, then green ones.

#![cfg(all(feature = "torch", feature = "video"))]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CONSTRUCTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/constructed_siglip");
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

fn f2c(video: &Path, query: &str) -> serde_json::Value {
    let relevance = format!("siglip:{CONSTRUCTED}");
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

fn indices(v: &serde_json::Value) -> Vec<u64> {
    v["frames"].as_array().unwrap().iter().map(|f| f["index"].as_u64().unwrap()).collect()
}

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
