//! The onnx backend on its own, as a CPU or edge machine builds it (`cargo test --no-default-features --features
//! onnx,video`, no libtorch anywhere): `ask`, `forward` and `compress` on the committed tiny exports. These tests
//! also run in the full build; the torch-versus-onnx comparisons are in `cli.rs` and `capabilities.rs`.

#![cfg(all(feature = "onnx", feature = "video"))]

use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures");

fn asset(name: &str) -> String {
    tokensieve::assets::require(name).expect("sample assets (run `make setup`)").display().to_string()
}

fn tokensieve(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokensieve")).args(args).output().expect("binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn ask_runs_both_exports_with_signals_queries_and_merges() {
    let video = asset("videos/bikes.mp4");
    let (a, b) = (asset("images/chelsea.png"), asset("images/coffee.png"));
    let llava = format!("{FIXTURES}/tiny_llava_onnx");
    let onevision = format!("{FIXTURES}/tiny_onevision_onnx");
    let cases: Vec<(&str, Vec<&str>, usize)> = vec![
        // CLS attention and keys at the feature layer; VisionZip's official count spends one of the 8 on the CLS
        // token the LLaVA token set does not carry.
        (&llava, vec!["--image", &a, "--image", &b, "--pruner", "visionzip", "--keep", "8"], 7),
        // SigLIP has no CLS: the attention each token receives, pooled with the video tokens.
        (&onevision, vec!["--video", &video, "--frames", "4", "--pruner", "holitom", "--ratio", "0.25"], 4),
        // The question's LLM input embeddings as the query.
        (&onevision, vec!["--video", &video, "--frames", "4", "--pruner", "cdpruner", "--ratio", "0.25"], 4),
    ];
    for (model, args, kept) in cases {
        let mut all = vec!["ask", "--backend", "onnx", "--model", model, "--max-new-tokens", "5", "--json"];
        all.extend(&args);
        all.push("what is there");
        let (code, out, err) = tokensieve(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let record = &v["record"];
        assert_eq!(record["kept"].as_array().unwrap().len(), kept, "{args:?}: {record}");
        assert_eq!(record["visual_tokens"].as_array().unwrap().last().unwrap()[1], kept as u64);
        assert!(record["generated_tokens"].as_u64().unwrap() > 0, "{record}");
        if args.contains(&"cdpruner") {
            let notes = record["notes"].to_string();
            assert!(notes.contains("LLM input embeddings"), "the query's source is recorded: {notes}");
        }
    }
}

#[test]
fn the_default_backend_is_onnx_without_libtorch_and_torch_is_refused_in_one_line() {
    if cfg!(feature = "torch") {
        return; // torch is the default backend where it is built (cli.rs tests that build)
    }
    let photo = asset("images/astronaut.png");
    let llava = format!("{FIXTURES}/tiny_llava_onnx");
    let (code, out, err) = tokensieve(&["forward", "--model", &llava, "--image", &photo, "--prompt", "<image> x"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("prompt tokens (16 visual)"), "{out}");
    let (code, _, err) =
        tokensieve(&["ask", "--backend", "torch", "--model", &llava, "--image", &photo, "what is there"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no torch backend") && err.lines().count() <= 2, "{err}");
}

#[test]
fn compress_draws_one_any_resolution_image_as_its_base_view_and_tile_map() {
    let dir = tempfile::tempdir().unwrap();
    let photo = asset("images/astronaut.png");
    let model = format!("{FIXTURES}/tiny_onevision_onnx");
    let out = dir.path().join("c");
    let (code, stdout, err) = tokensieve(&[
        "compress",
        "--backend",
        "onnx",
        "--model",
        &model,
        "--image",
        &photo,
        "--pruner",
        "todre",
        "--ratio",
        "0.3",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["visual_tokens"]["before"], 46, "base view 4x4 + a 5x5 map with a newline per row");
    assert_eq!(v["visual_tokens"]["after"], 14);
    let picture = image::open(out.join("kept.png")).unwrap();
    assert_eq!(picture.width(), 2 * picture.height(), "two panels: the base view and the tile map");
}
