//! The `tokensieve` binary end to end: JSON output, exit codes and one-line errors.

use std::path::Path;
use std::process::Command;
use tokensieve::npy::write_f32;

/// The committed tiny random LLaVA (parity fixture) the model commands run on.
#[allow(dead_code)]
const TINY_LLAVA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_llava");

fn tokensieve(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokensieve")).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn features(dir: &Path, n: usize, d: usize) -> String {
    let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5).collect();
    let path = dir.join("f.npy");
    write_f32(&path, &[n, d], &data).unwrap();
    path.to_string_lossy().into()
}

#[test]
fn prune_prints_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let f = features(dir.path(), 100, 8);
    let merged = dir.path().join("m.npy");
    let (code, out, err) = tokensieve(&[
        "prune",
        "--features",
        &f,
        "--method",
        "tome",
        "--ratio",
        "0.1",
        "--json",
        "--merged-out",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["method"], "tome");
    assert_eq!(v["n"], 100);
    let kept: Vec<u64> = v["kept"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(kept.len(), 10);
    assert!(kept.windows(2).all(|w| w[0] < w[1]));
    assert!(v["elapsed_ms"].is_number(), "elapsed_ms is a number: {out}");
    assert!(v["params"].is_object());
    assert_eq!(v["sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).sum::<u64>(), 100);
    let m = tokensieve::npy::read(&merged).unwrap();
    assert_eq!(m.shape, vec![10, 8]);
}

#[test]
fn seed_and_params_reach_the_method() {
    let dir = tempfile::tempdir().unwrap();
    let f = features(dir.path(), 64, 4);
    let run = |seed: &str| {
        tokensieve(&["prune", "--features", &f, "--method", "random", "--keep", "5", "--seed", seed, "--json"]).1
    };
    let a: serde_json::Value = serde_json::from_str(run("1").trim()).unwrap();
    let again: serde_json::Value = serde_json::from_str(run("1").trim()).unwrap();
    assert_eq!(a["kept"], again["kept"], "same seed, same picks");
    let b: serde_json::Value = serde_json::from_str(run("2").trim()).unwrap();
    assert_ne!(a["kept"], b["kept"]);
    assert_eq!(a["params"]["seed"], "1");
    let (code, out, _) =
        tokensieve(&["prune", "--features", &f, "--method", "mmr", "--keep", "5", "--param", "lambda=0.9", "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"lambda\":\"0.9\""), "{out}");
}

#[test]
fn errors_are_one_line_with_usage_and_runtime_codes() {
    let dir = tempfile::tempdir().unwrap();
    let f = features(dir.path(), 16, 4);
    let cases: [(&[&str], i32, &str); 6] = [
        (&["prune", "--features", &f, "--method", "nope", "--keep", "2"], 2, "unknown method"),
        (&["prune", "--features", &f, "--method", "visionzip", "--keep", "2"], 2, "needs CLS attention"),
        (&["prune", "--features", &f, "--method", "todre", "--ratio", "1.5"], 2, "invalid budget"),
        (&["prune", "--features", &f, "--method", "todre", "--keep", "2", "--grid", "2,3,3"], 2, "layout"),
        (&["prune", "--features", "/nonexistent.npy", "--method", "todre", "--keep", "2"], 1, "nonexistent"),
        (
            &["prune", "--features", &f, "--method", "random", "--keep", "2", "--seed", "1", "--param", "x"],
            2,
            "key=value",
        ),
    ];
    for (args, code, text) in cases {
        let (got, out, err) = tokensieve(args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("error: ") && first.contains(text), "{args:?}: {err}");
        assert!(err.lines().count() <= 2, "more than a line and a hint: {err}");
    }
    let (code, _, _) = tokensieve(&["prune", "--method", "todre"]);
    assert_eq!(code, 2, "clap usage errors exit 2");
}

#[test]
fn list_names_every_method_with_its_parameters() {
    let (code, out, _) = tokensieve(&["prune", "--list"]);
    assert_eq!(code, 0);
    for m in tokensieve::pruners::METHODS {
        assert!(out.lines().any(|l| l.starts_with(m.name)), "{} missing from --list", m.name);
    }
    assert!(out.contains("lambda=0.5"));
}

#[test]
fn doctor_reports_every_backend_and_the_assets() {
    // `make test` sources the setup's env.sh; without it ONNX Runtime cannot be found and this test fails loudly.
    let (code, out, err) = tokensieve(&["doctor", "--json"]);
    assert_eq!(code, 0, "doctor unhealthy (run `make setup`):\n{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Versions differ between machines: each backend reports one that reads as `major.minor[...]`.
    let version_like = |name: &str| {
        let version = v[name]["version"].as_str().unwrap_or_else(|| panic!("{name} has no version: {out}"));
        let mut parts = version.trim_start_matches('n').split(['.', '-', '+', ' ']);
        let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        assert!(numeric(parts.next()) && numeric(parts.next()), "{name} version {version:?}");
    };
    version_like("onnxruntime");
    version_like("ffmpeg");
    if cfg!(feature = "torch") {
        version_like("libtorch");
    }
    let files = v["assets"]["files"].as_array().unwrap();
    let missing: Vec<&str> = files.iter().filter(|f| f["ok"] != true).map(|f| f["name"].as_str().unwrap()).collect();
    assert!(missing.is_empty(), "assets missing (run `make setup`): {missing:?}");
}

fn asset(name: &str) -> String {
    let path = tokensieve::assets::require(name).expect("sample assets (run `make setup`)");
    path.to_string_lossy().into_owned()
}

#[test]
fn sample_reports_frames_and_timestamps() {
    let video = asset("videos/vtest.avi");
    let (code, out, err) = tokensieve(&["sample", &video, "--sampler", "uniform", "--frames", "5", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["sampler"], "uniform");
    let frames = v["frames"].as_array().unwrap();
    let indices: Vec<u64> = frames.iter().map(|f| f["index"].as_u64().unwrap()).collect();
    // vtest.avi: 795 frames at 10 fps; lmms-eval's inclusive linspace.
    assert_eq!(indices, vec![0, 198, 397, 595, 794]);
    for (f, i) in frames.iter().zip(&indices) {
        assert!((f["timestamp"].as_f64().unwrap() - *i as f64 / 10.0).abs() < 1e-6, "{f}");
    }
    let (_, out, _) = tokensieve(&["sample", &video, "--sampler", "uniform-interior", "--frames", "3", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let interior: Vec<u64> = v["frames"].as_array().unwrap().iter().map(|f| f["index"].as_u64().unwrap()).collect();
    assert_eq!(interior, vec![198, 397, 596]);
}

#[test]
fn sample_writes_pictures_and_rejects_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let video = asset("videos/bikes.mp4");
    let out_dir = dir.path().join("frames");
    let (code, _, err) =
        tokensieve(&["sample", &video, "--sampler", "dcode", "--frames", "4", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut names: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[0], "frame_000000.png");
    let (code, _, err) = tokensieve(&["sample", &video, "--sampler", "f2c"]);
    assert_eq!(code, 2);
    assert!(err.contains("image-text encoder"), "{err}");
    let (code, _, err) = tokensieve(&["sample", &video, "--sampler", "fps"]);
    assert_eq!(code, 2, "fps needs --fps: {err}");
    assert!(err.contains("fps"), "{err}");
    let (code, _, err) = tokensieve(&["sample", "/nonexistent.mp4"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: /nonexistent.mp4"), "{err}");
}

#[test]
fn score_caption_prints_pycocoevalcap_names() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/caption/predictions.jsonl");
    let (code, out, err) = tokensieve(&["score", "--task", "caption", "--predictions", fixture, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for name in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
        assert!(v["metrics"][name].as_f64().is_some(), "{name} missing: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"a\", \"prediction\": \"x\", \"references\": [\"y\"]}\nnot json\n").unwrap();
    let (code, _, err) = tokensieve(&["score", "--task", "caption", "--predictions", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.jsonl:2"), "{err}");
    let (code, _, _) = tokensieve(&["score", "--task", "nuscenes-qa", "--predictions", fixture]);
    assert_eq!(code, 2, "tasks not implemented yet are refused by name");
}

#[test]
fn score_drivelm_and_nuscenes_qa_from_synthetic_records() {
    let dir = tempfile::tempdir().unwrap();
    let test_file = dir.path().join("test_eval.json");
    std::fs::write(
        &test_file,
        serde_json::json!({"s": {"key_frames": {"f": {"QA": {
            "perception": [{"Q": "Important objects?", "A": "A bus <c1,CAM_FRONT,10.0,20.0>.", "tag": [2]},
                           {"Q": "Status of <c1,CAM_FRONT,10.0,20.0>? A. Moving. B. Parked.", "A": "B", "tag": [0]}],
            "prediction": [{"Q": "Notice first?", "A": "Notice <c1,CAM_FRONT,10.0,20.0>.", "tag": [3]}],
            "planning": [{"Q": "What now?", "A": "Stop.", "tag": [1]}], "behavior": []},
            "image_paths": {}}}}})
        .to_string(),
    )
    .unwrap();
    let preds = dir.path().join("output.json");
    std::fs::write(
        &preds,
        serde_json::json!([{"id": "s_f_0", "answer": "A bus <c1,CAM_FRONT,11.0,20.0>."}, {"id": "s_f_1", "answer": "B"},
                           {"id": "s_f_2", "answer": "Notice <c1,CAM_FRONT,10.0,20.0>."}, {"id": "s_f_3", "answer": "Stop."}])
        .to_string(),
    )
    .unwrap();
    let args = [
        "score",
        "--task",
        "drivelm",
        "--predictions",
        preds.to_str().unwrap(),
        "--data",
        test_file.to_str().unwrap(),
        "--json",
    ];
    let (code, out, err) = tokensieve(&args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["scores"]["accuracy"], 1.0);
    assert!(v["scores"]["final"].is_null(), "no judge, no final score: {out}");
    let mut judged = args.to_vec();
    judged.extend(["--judge", "echo 70"]);
    let v: serde_json::Value = serde_json::from_str(tokensieve(&judged).1.trim()).unwrap();
    assert_eq!(v["scores"]["chatgpt"], 70.0);
    assert!(v["scores"]["final"].as_f64().is_some(), "{v}");

    let questions = dir.path().join("questions.json");
    std::fs::write(
        &questions,
        serde_json::json!({"questions": [
        {"sample_token": "t", "question": "Any cars?", "answer": "yes", "num_hop": 0, "template_type": "exist"},
        {"sample_token": "t", "question": "How many?", "answer": "3", "num_hop": 1, "template_type": "count"}]})
        .to_string(),
    )
    .unwrap();
    let answers = dir.path().join("answers.jsonl");
    std::fs::write(&answers, "{\"id\": 0, \"prediction\": \"Yes.\"}\n{\"id\": 1, \"prediction\": \"two\"}\n").unwrap();
    let (code, out, err) = tokensieve(&[
        "score",
        "--task",
        "nuscenes-qa",
        "--predictions",
        answers.to_str().unwrap(),
        "--data",
        questions.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Overall        1/2 = 50.00"), "{out}");
    let (code, _, err) = tokensieve(&["score", "--task", "drivelm", "--predictions", preds.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("needs --data"), "{err}");
}

#[test]
fn score_mcq_reports_the_extractor_and_its_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mc.jsonl");
    std::fs::write(
        &p,
        "{\"id\":\"1\",\"prediction\":\"The answer is B\",\"answer\":\"B\"}\n{\"id\":\"2\",\"prediction\":\"C\",\"answer\":\"D\"}\n\
         {\"id\":\"3\",\"prediction\":\"it is impossible to say anything at all about this particular video clip\",\"answer\":\"A\"}\n",
    )
    .unwrap();
    let run = |e: &str| {
        let (code, out, err) =
            tokensieve(&["score", "--task", "mcq", "--extractor", e, "--predictions", p.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["result"].clone()
    };
    let official = run("videomme_official");
    assert_eq!(
        (official["correct"].as_u64(), official["counted"].as_u64(), official["excluded"].as_u64()),
        (Some(1), Some(2), Some(1))
    );
    let lmms = run("lmms_eval_le0.4_videomme");
    assert_eq!((lmms["counted"].as_u64(), lmms["excluded"].as_u64()), (Some(3), Some(0)));
    let (code, _, err) =
        tokensieve(&["score", "--task", "mcq", "--extractor", "nope", "--predictions", p.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown extractor `nope`"), "{err}");
}

#[cfg(feature = "torch")]
#[test]
fn ask_and_forward_run_the_real_smollm2() {
    let gguf = asset("llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    let ask = |extra: &[&str]| {
        let base = ["ask", "--model", &gguf, "What is the capital of France?", "--json", "--max-new-tokens", "16"];
        tokensieve(&[&base[..], extra].concat())
    };
    let (code, out, err) = ask(&[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["answer"].as_str().unwrap().contains("Paris"), "{out}");
    for field in ["prompt_tokens", "generated_tokens", "ttft_ms", "kv_bytes"] {
        assert!(v["record"][field].is_number(), "{field} missing: {out}");
    }
    // Int8 decoder weights (`--precision q8`, a CPU mode) on the real model: still the right answer.
    let (code, out, err) = ask(&["--device", "cpu", "--precision", "q8"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["answer"].as_str().unwrap().contains("Paris"), "q8: {out}");
    let dir = tempfile::tempdir().unwrap();
    let logits = dir.path().join("l.npy");
    let (code, out, err) = tokensieve(&[
        "forward",
        "--model",
        &gguf,
        "--prompt",
        "Hi",
        "--logits-out",
        logits.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"vocab\":49152"), "{out}");
    assert_eq!(tokensieve::npy::read(&logits).unwrap().shape, vec![49152]);
    let (code, _, err) = tokensieve(&["ask", "--model", &gguf, "--image", "x.png", "hi"]);
    assert_eq!(code, 2);
    assert!(err.contains("vision-language"), "{err}");
    let (code, _, _) = tokensieve(&["ask", "--model", "/nonexistent/dir", "hi"]);
    assert_eq!(code, 2);
}

#[cfg(feature = "torch")]
#[test]
fn forward_runs_a_tiny_llava_on_a_real_photo_and_writes_the_signals() {
    let model = TINY_LLAVA;
    let photo = asset("images/astronaut.png");
    let dir = tempfile::tempdir().unwrap();
    let (f, a, l) = (dir.path().join("f.npy"), dir.path().join("a.npy"), dir.path().join("l.npy"));
    let (code, out, err) = tokensieve(&[
        "forward",
        "--model",
        model,
        "--image",
        &photo,
        "--prompt",
        "<s> what is in <image> the road",
        "--json",
        "--features-out",
        f.to_str().unwrap(),
        "--cls-attn-out",
        a.to_str().unwrap(),
        "--logits-out",
        l.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // 6 text tokens + 16 visual tokens (a 32 x 32 image in 8-pixel patches).
    assert_eq!((v["prompt_tokens"].as_u64(), v["visual_tokens"].as_u64()), (Some(22), Some(16)));
    assert_eq!(tokensieve::npy::read(&f).unwrap().shape, vec![16, 32]);
    let attention = tokensieve::npy::read(&a).unwrap();
    assert_eq!(attention.shape, vec![16]);
    let total: f32 = attention.data.iter().sum();
    assert!(total > 0.0 && total < 1.0, "CLS attention over the patches is part of a softmax: {total}");
    assert_eq!(tokensieve::npy::read(&l).unwrap().shape, vec![64]);
    let (code, _, err) = tokensieve(&["forward", "--model", model, "--image", &photo, "--prompt", "no placeholder"]);
    assert_eq!(code, 2, "{err}");
}

/// `compress` with a question: query-aware methods read its LLM input embeddings (the same query `ask` gives them),
/// the picture gains a relevance heat map beside each frame, and the record names the query's source; without the
/// question a method that needs it is a usage error pointing at the question, and a query-agnostic method says so.
#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn compress_takes_the_question_for_query_aware_methods() {
    let video = asset("videos/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q");
    // What `compress` and `ask` are both given: the model, 4 frames and a quarter of the tokens.
    let media = ["--model", TINY_LLAVA, "--video", video.as_str(), "--frames", "4", "--ratio", "0.25", "--json"];
    let run = |pruner: &str, question: Option<&str>| {
        let mut args = vec!["compress", "--pruner", pruner, "--out", out.to_str().unwrap()];
        args.extend(media);
        args.extend(question);
        tokensieve(&args)
    };
    let (code, stdout, err) = run("cdpruner", Some("where are the bikes?"));
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(record["question"], "where are the bikes?");
    assert!(record["query"].as_str().unwrap().starts_with("the question's LLM input embeddings"), "{record}");
    assert_eq!(record["kept"].as_array().unwrap().len(), 16);
    // Four frames, each followed by its heat map: eight panels, four to a row.
    let picture = image::open(out.join("kept.png")).unwrap();
    assert_eq!((picture.width(), picture.height()), (4 * 224, 2 * 224));
    let (code, _, err) = run("cdpruner", None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give the question"), "{err}");
    let (code, stdout, err) = run("todre", Some("where are the bikes?"));
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(record["query"].as_str().unwrap().contains("todre is query-agnostic"), "{record}");
    // MMR weighted by the question's relevance (the `llm` provider), here and in `ask`, which asks a question.
    let (code, _, err) = run("mmr:importance=relevance", None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give the question"), "{err}");
    let (code, stdout, err) = run("mmr:importance=relevance", Some("where are the bikes?"));
    assert_eq!(code, 0, "{err}");
    let by_question: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(by_question["kept"].as_array().unwrap().len(), 16);
    let ask = ["ask", "--pruner", "mmr:importance=relevance", "--max-new-tokens", "2", "where are the bikes?"];
    let (code, stdout, err) = tokensieve(&[&ask[..], &media[..]].concat());
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let notes = answer["record"]["notes"].to_string();
    assert!(notes.contains("relevance = mean cosine to the question's LLM input embeddings"), "{notes}");
    assert_eq!(answer["record"]["kept"], by_question["kept"], "ask and compress keep the same tokens");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn compress_draws_the_kept_patches_and_records_the_counts() {
    let model = TINY_LLAVA;
    let video = asset("videos/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (code, stdout, err) = tokensieve(&[
        "compress",
        "--model",
        model,
        "--video",
        &video,
        "--frames",
        "4",
        "--pruner",
        "todre",
        "--ratio",
        "0.25",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // 4 frames x 16 visual tokens; 25 % kept.
    assert_eq!(record["visual_tokens"]["before"], 64);
    assert_eq!(record["visual_tokens"]["after"], 16);
    let per_frame: u64 =
        record["visual_tokens"]["per_frame"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(per_frame, 16, "per-frame counts add up to the kept tokens");
    assert_eq!(record["kept"].as_array().unwrap().len(), 16);
    let picture = image::open(out.join("kept.png")).unwrap();
    assert_eq!((picture.width(), picture.height()), (4 * 224, 224));
    assert!(out.join("record.json").is_file());
    let (code, _, err) = tokensieve(&[
        "compress",
        "--model",
        model,
        "--video",
        &video,
        "--pruner",
        "nope",
        "--ratio",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown method `nope`"), "{err}");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn ask_about_a_video_prunes_before_and_inside_the_decoder() {
    let model = TINY_LLAVA;
    let video = asset("videos/bikes.mp4");
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args =
            vec!["ask", "--model", model, "--video", &video, "--frames", "4", "--max-new-tokens", "3", "--json"];
        args.extend_from_slice(extra);
        args.push("what is on the road");
        let (code, out, err) = tokensieve(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let full = run(&[]);
    let pruned = run(&["--pruner", "todre", "--ratio", "0.1"]);
    let fastv = run(&["--in-llm", "fastv:layer=1,ratio=0.5"]);
    let (full_r, pruned_r, fastv_r) = (&full["record"], &pruned["record"], &fastv["record"]);
    // 4 frames x 16 visual tokens; 10 % keeps 6 (round half to even of 6.4).
    assert_eq!(pruned_r["visual_tokens"][1], serde_json::json!(["todre", 6]));
    assert_eq!(full_r["prefill_tokens"].as_u64().unwrap() - pruned_r["prefill_tokens"].as_u64().unwrap(), 58);
    assert!(pruned_r["kv_bytes"].as_u64() < full_r["kv_bytes"].as_u64(), "fewer positions in the KV cache");
    assert!(pruned_r["llm_macs_swiglu"].as_f64() < full_r["llm_macs_swiglu"].as_f64());
    // FastV at layer 1 drops half of the 64 visual tokens from layer 1 on.
    let layers: Vec<u64> =
        fastv_r["tokens_per_layer"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(layers[1], layers[0] - 32);
    assert!(fastv_r["ttft_ms"].as_f64().unwrap() > 0.0);
    for (bad, why) in [
        (&["--pruner", "nope"][..], "unknown method `nope`"),
        (&["--ratio", "0"][..], "ratio 0"),
        (&["--in-llm", "pdrop"][..], "2 layers"),
    ] {
        let mut args = vec!["ask", "--model", model, "--video", &video];
        args.extend_from_slice(bad);
        args.push("q");
        let (code, _, err) = tokensieve(&args);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains(why), "{bad:?}: expected `{why}` in {err}");
    }
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn bench_reports_every_budget_with_the_documented_fields() {
    let model = TINY_LLAVA;
    let video = asset("videos/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("b.png");
    let (code, out, err) = tokensieve(&[
        "bench",
        "--model",
        model,
        "--video",
        &video,
        "--frames",
        "4",
        "--budgets",
        "100%,25%",
        "--repeats",
        "1",
        "--plot",
        plot.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for field in
        ["budget", "visual_tokens", "prefill_tokens", "llm_tflops", "ttft_ms", "stage_ms", "kv_bytes", "peak_rss_bytes"]
    {
        assert!(!rows[0][field].is_null(), "{field} missing");
    }
    assert_eq!((rows[0]["visual_tokens"].as_u64(), rows[1]["visual_tokens"].as_u64()), (Some(64), Some(16)));
    // The backend as loaded: the tiny checkpoint is stored in f32, so `--dtype auto` computes in f32.
    let backend = v["backend"].as_str().unwrap_or_default();
    assert!(backend.starts_with("torch ") && backend.ends_with(" f32 (auto)"), "{backend}");
    assert!(rows[1]["llm_tflops"].as_f64() < rows[0]["llm_tflops"].as_f64());
    assert!(rows[1]["kv_bytes"].as_u64() < rows[0]["kv_bytes"].as_u64());
    assert!(image::open(&plot).is_ok());
    let (code, _, err) = tokensieve(&["bench", "--model", model, "--video", &video, "--budgets", "150%"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("budget 150% is outside"), "{err}");
}

/// `bench --frames-sweep`: one row per frame count and budget, counts in ascending order whatever the order given,
/// each with the visual tokens of its frames and a peak RSS; a count of 0 is a usage error.
#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn bench_sweeps_frame_counts() {
    let video = asset("videos/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("sweep.svg");
    let base =
        ["bench", "--model", TINY_LLAVA, "--video", video.as_str(), "--budgets", "100%,25%", "--new-tokens", "2"];
    let (code, out, err) =
        tokensieve(&[&base[..], &["--frames-sweep", "4,2", "--json", "--plot", plot.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    // The chart names its axes and every series.
    let svg = std::fs::read_to_string(&plot).unwrap();
    for text in ["frames", "peak RSS (MiB)", "TTFT (ms)", "peak RSS at 100%", "TTFT at 25%"] {
        assert!(svg.contains(text), "{text} missing from the sweep chart");
    }
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let rows: Vec<(u64, String, u64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["peak_rss_bytes"].as_u64() > Some(0) && r["ttft_ms"].as_f64() > Some(0.0), "{r}");
            (
                r["frames"].as_u64().unwrap(),
                r["budget"].as_str().unwrap().to_string(),
                r["visual_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [(2, "100%", 32), (2, "25%", 8), (4, "100%", 64), (4, "25%", 16)];
    assert_eq!(rows, want.map(|(f, b, t)| (f, b.to_string(), t)));
    let (code, _, err) = tokensieve(&[&base[..], &["--frames-sweep", "0,4"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 1"), "{err}");
}

/// A synthetic DriveLM test file: key frame `f1` has two cameras (tiny PNGs written here), `f2` points at a missing
/// image so its questions must be recorded as errors without stopping the run.
#[cfg(all(feature = "torch", feature = "video"))]
fn drivelm_records(dir: &Path) -> std::path::PathBuf {
    let cams = dir.join("nuscenes/samples");
    for (cam, shade) in [("CAM_FRONT", 40u8), ("CAM_BACK", 200u8)] {
        std::fs::create_dir_all(cams.join(cam)).unwrap();
        let img = image::RgbImage::from_fn(48, 32, |x, y| image::Rgb([shade, (x * 5) as u8, (y * 7) as u8]));
        img.save(cams.join(cam).join("a.png")).unwrap();
    }
    let qa = |q: &str, a: &str, tag: u8| serde_json::json!({"Q": q, "A": a, "tag": [tag]});
    let file = dir.join("test.json");
    let record = serde_json::json!({"scene": {"key_frames": {
        "f1": {"QA": {"perception": [qa("What is ahead? A. Car. B. Truck.", "A", 0), qa("Important objects?", "A car <c1,CAM_FRONT,10.0,20.0>.", 2)],
                      "prediction": [qa("Will it move?", "Yes.", 3)], "planning": [qa("What now?", "Slow down.", 1)], "behavior": []},
               "image_paths": {"CAM_FRONT": "../nuscenes/samples/CAM_FRONT/a.png", "CAM_BACK": "../nuscenes/samples/CAM_BACK/a.png"}},
        "f2": {"QA": {"perception": [qa("Anything left?", "No.", 1)], "planning": [qa("Turn?", "B", 0)]},
               "image_paths": {"CAM_FRONT": "../nuscenes/samples/CAM_FRONT/missing.png"}}}}});
    std::fs::write(&file, record.to_string()).unwrap();
    file
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn eval_drivelm_resumes_shards_and_merges_to_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = drivelm_records(dir.path());
    let root = dir.path().to_str().unwrap().to_string();
    let eval = |out: &str, extra: &[&str]| -> serde_json::Value {
        let out = dir.path().join(out);
        let mut args = vec![
            "eval",
            "--task",
            "drivelm",
            "--data",
            data.to_str().unwrap(),
            "--data-root",
            &root,
            "--model",
            TINY_LLAVA,
            "--pruner",
            "todre",
            "--ratio",
            "0.5",
            "--max-new-tokens",
            "3",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, stdout, err) = tokensieve(&args);
        assert_eq!(code, 0, "{err}");
        let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        assert_eq!(printed, saved);
        saved
    };
    let lines = |out: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join(out).join("samples_drivelm.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let answers = |ls: &[serde_json::Value]| -> Vec<(String, serde_json::Value)> {
        let mut v: Vec<_> =
            ls.iter().map(|l| (l["id"].as_str().unwrap().to_string(), l["prediction"].clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };

    let single = eval("single", &[]);
    let single_lines = lines("single");
    assert_eq!(single["samples"], 6);
    assert_eq!(single["errors"], 2, "f2's image is missing: {single}");
    assert_eq!(single["scores"]["key_frames_scored"], 2);
    assert!(
        single["scores"]["missing_predictions"].as_u64().unwrap() >= 1,
        "an errored sample is unanswered: {single}"
    );
    assert!(single_lines
        .iter()
        .filter(|l| l["error"].is_string())
        .all(|l| l["id"].as_str().unwrap().starts_with("scene_f2")));
    // Two cameras x 16 patches, halved by ToDRE.
    let kept = &single_lines[0]["record"]["visual_tokens"];
    assert_eq!(kept[0], serde_json::json!(["encoder", 32]), "{kept}");
    assert_eq!(kept[1], serde_json::json!(["todre", 16]), "{kept}");
    assert!(single["efficiency"]["mean_llm_tflops"].as_f64().unwrap() > 0.0);
    assert_eq!(single["config_hash"].as_str().unwrap().len(), 16);

    // A run cut after two samples, resumed: the first lines stay, the rest are answered once.
    eval("resumed", &["--limit", "2"]);
    let partial = lines("resumed");
    assert_eq!(partial.len(), 2);
    // Killed while writing the third line: the half line is cut off and that sample answered again.
    let file = dir.path().join("resumed/samples_drivelm.jsonl");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(r#"{"id":"scene_f1_2","predic"#);
    std::fs::write(&file, text).unwrap();
    eval("resumed", &["--resume"]);
    let resumed = lines("resumed");
    assert_eq!(resumed.len(), 6);
    assert_eq!(resumed[..2], partial[..]);
    assert_eq!(answers(&resumed), answers(&single_lines));

    // Two shards merged equal the single run.
    eval("s0", &["--shard", "0/2"]);
    eval("s1", &["--shard", "1/2"]);
    assert_eq!(lines("s0").len() + lines("s1").len(), 6);
    let merged_dir = dir.path().join("merged");
    let (code, out, err) = tokensieve(&[
        "merge",
        "--task",
        "drivelm",
        "--data",
        data.to_str().unwrap(),
        "--out",
        merged_dir.to_str().unwrap(),
        dir.path().join("s0").to_str().unwrap(),
        dir.path().join("s1").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let merged: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["samples", "errors", "scores", "config_hash"] {
        assert_eq!(merged[key], single[key], "{key}");
    }
    assert_eq!(answers(&lines("merged")), answers(&single_lines));

    // The challenge's output.json holds the answered samples; `score --judge` reads it with the same file.
    let output = dir.path().join("merged/output.json");
    let submitted: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    assert_eq!(submitted.as_array().unwrap().len(), 4, "the two errored samples have no answer");
    let (code, scored, err) = tokensieve(&[
        "score",
        "--task",
        "drivelm",
        "--predictions",
        output.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--judge",
        "echo 50",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let scored: serde_json::Value = serde_json::from_str(scored.trim()).unwrap();
    assert_eq!(scored["scores"]["accuracy"], merged["scores"]["accuracy"]);
    assert_eq!(scored["scores"]["chatgpt"], 50.0);

    // Shards of different settings are refused.
    eval("other", &["--shard", "1/2", "--in-llm", "fastv:layer=1,ratio=0.5"]);
    let (code, _, err) = tokensieve(&[
        "merge",
        "--task",
        "drivelm",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("bad").to_str().unwrap(),
        dir.path().join("s0").to_str().unwrap(),
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("different configurations"), "{err}");

    // Resuming retries the failed samples: once f2's image exists they are answered and their new lines count.
    let front = dir.path().join("nuscenes/samples/CAM_FRONT");
    std::fs::copy(front.join("a.png"), front.join("missing.png")).unwrap();
    let retried = eval("single", &["--resume"]);
    assert_eq!(lines("single").len(), 8, "two retried samples appended");
    assert_eq!((retried["samples"].as_u64(), retried["errors"].as_u64()), (Some(6), Some(0)), "{retried}");
    std::fs::remove_file(front.join("missing.png")).unwrap();

    // Without --resume an output folder is started afresh, and a bad shard is a usage error.
    eval("single", &[]);
    assert_eq!(lines("single").len(), 6);
    let (code, _, err) = tokensieve(&[
        "eval",
        "--task",
        "drivelm",
        "--data",
        data.to_str().unwrap(),
        "--data-root",
        &root,
        "--model",
        TINY_LLAVA,
        "--out",
        &root,
        "--shard",
        "2/2",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shard `2/2`"), "the shard is refused, not a missing flag: {err}");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn eval_reads_em_vlm4ad_split_files() {
    let dir = tempfile::tempdir().unwrap();
    drivelm_records(dir.path());
    let data = dir.path().join("multi_frame_test.json");
    let pair = |q: &str, a: &str, cams: serde_json::Value| serde_json::json!([{"Q": q, "A": a}, cams]);
    let front = "nuscenes/samples/CAM_FRONT/a.png";
    std::fs::write(
        &data,
        serde_json::json!([
            pair(
                "What is ahead?",
                "A car.",
                serde_json::json!({"CAM_FRONT": front, "CAM_BACK": "nuscenes/samples/CAM_BACK/a.png"})
            ),
            pair("Should the ego car stop?", "No.", serde_json::json!({"CAM_FRONT": front})),
        ])
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, stdout, err) = tokensieve(&[
        "eval",
        "--task",
        "drivelm",
        "--data",
        data.to_str().unwrap(),
        "--data-root",
        dir.path().to_str().unwrap(),
        "--model",
        TINY_LLAVA,
        "--max-new-tokens",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((v["samples"].as_u64(), v["errors"].as_u64()), (Some(2), Some(0)), "{v}");
    assert_eq!(v["scores"]["scored"], 2, "every EM-VLM4AD answer is scored: {v}");
    assert!(v["scores"]["language"]["CIDEr"].is_number(), "{v}");
    // Two cameras, then one: 32 and 16 visual tokens without a pruner.
    assert!((v["efficiency"]["mean_visual_tokens"].as_f64().unwrap() - 24.0).abs() < 1e-9, "{v}");
}

/// Runs `eval` with the tiny LLaVA and returns (exit code, printed results, stderr).
#[cfg(all(feature = "torch", feature = "video"))]
fn eval_run(task: &str, data: &Path, root: &Path, out: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    eval_run_on(TINY_LLAVA, task, data, root, out, extra)
}

/// `eval` of `task` with `model` (3 new tokens) and `extra` flags: exit code, printed JSON and stderr.
#[cfg(feature = "video")]
fn eval_run_on(
    model: &str,
    task: &str,
    data: &Path,
    root: &Path,
    out: &Path,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "eval",
        "--task",
        task,
        "--data",
        data.to_str().unwrap(),
        "--data-root",
        root.to_str().unwrap(),
        "--model",
        model,
        "--max-new-tokens",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, err) = tokensieve(&args);
    (code, serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null), err)
}

#[cfg(all(feature = "torch", feature = "video"))]
fn sample_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn eval_video_benchmarks_sample_frames_and_score_with_named_extractors() {
    let dir = tempfile::tempdir().unwrap();
    // Video-MME's Hugging Face parquet: two questions on `bikes`, one on a video that is not there.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink(asset("videos/bikes.mp4"), dir.path().join("data/bikes.mp4")).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/videomme_test.parquet");
    let out = dir.path().join("vm");
    let (code, v, err) =
        eval_run("videomme", &data, dir.path(), &out, &["--frames", "2", "--pruner", "todre", "--keep", "8"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["samples"].as_u64(), v["errors"].as_u64()), (Some(3), Some(1)), "{v}");
    assert_eq!(v["scores"]["extractor"], "videomme_official");
    let overall = &v["scores"]["overall"];
    assert_eq!(overall["counted"].as_u64().unwrap() + overall["excluded"].as_u64().unwrap(), 2, "{v}");
    assert_eq!(v["scores"]["without_reply"], 1, "the missing video is not scored: {v}");
    assert!(v["scores"]["by"]["duration"]["short"].is_object(), "{v}");
    let lines = sample_lines(&out.join("samples_videomme.jsonl"));
    let answered = lines.iter().find(|l| l["id"] == "001-1").unwrap();
    assert_eq!(answered["record"]["frames"].as_array().unwrap().len(), 2, "--frames 2");
    assert_eq!(answered["record"]["visual_tokens"][0], serde_json::json!(["encoder", 32]));
    assert_eq!(answered["record"]["visual_tokens"][1], serde_json::json!(["todre", 8]));
    assert_eq!(answered["target"], "B");
    assert!(answered["decode_ms"].as_f64().unwrap() > 0.0);
    let missing = lines.iter().find(|l| l["id"] == "002-1").unwrap();
    assert!(missing["error"].as_str().unwrap().contains("lost_video"), "{missing}");

    // The same lines under another extractor: merge rescores them; its name is in the result.
    let (code, merged, err) = {
        let (c, o, e) = tokensieve(&[
            "merge",
            "--task",
            "videomme",
            "--data",
            data.to_str().unwrap(),
            "--extractor",
            "lmms_eval_2026_priority",
            "--out",
            dir.path().join("rescored").to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        (c, serde_json::from_str::<serde_json::Value>(&o).unwrap_or_default(), e)
    };
    assert_eq!(code, 0, "{err}");
    assert_eq!(merged["scores"]["extractor"], "lmms_eval_2026_priority");
    assert_eq!(merged["scores"]["overall"]["counted"], 2, "this extractor excludes nothing");

    // MLVU: the official JSON folder, videos under video/<task folder>/, a system prompt, M-Avg.
    let mlvu = dir.path().join("MLVU");
    std::fs::create_dir_all(mlvu.join("json")).unwrap();
    std::fs::create_dir_all(mlvu.join("video/4_count")).unwrap();
    std::os::unix::fs::symlink(asset("videos/cup.mp4"), mlvu.join("video/4_count/cup.mp4")).unwrap();
    let q = serde_json::json!([{"video": "cup.mp4", "duration": 10.0, "question": "How many cups?",
        "candidates": ["1", "2", "3"], "answer": "1", "question_type": "count"}]);
    std::fs::write(mlvu.join("json/4_count.json"), q.to_string()).unwrap();
    let (code, v, err) = eval_run("mlvu", &mlvu.join("json"), &mlvu, &dir.path().join("mlvu_out"), &["--frames", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["samples"].as_u64(), v["errors"].as_u64()), (Some(1), Some(0)), "{v}");
    assert!(v["scores"]["macro_accuracy"].is_number(), "M-Avg: {v}");
    assert_eq!(v["config"]["frames"], 3);

    // Bad settings are usage errors with one line.
    let (code, _, err) = eval_run("videomme", &data, dir.path(), &out, &["--extractor", "nope"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = eval_run("mlvu", &data, dir.path(), &out, &[]);
    assert_eq!(code, 2, "a Video-MME file read as MLVU: {err}");
    assert!(err.contains("candidates"), "{err}");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn eval_nuscenes_qa_finds_cameras_through_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nuscenes");
    for (cam, shade) in [("CAM_FRONT", 30u8), ("CAM_BACK_LEFT", 220u8)] {
        std::fs::create_dir_all(root.join("samples").join(cam)).unwrap();
        let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([shade, (x * 6) as u8, (y * 8) as u8]));
        img.save(root.join("samples").join(cam).join("k1.png")).unwrap();
    }
    std::fs::create_dir_all(root.join("v1.0-mini")).unwrap();
    let meta = serde_json::json!([
        {"token": "a", "sample_token": "s1", "filename": "samples/CAM_BACK_LEFT/k1.png", "is_key_frame": true},
        {"token": "b", "sample_token": "s1", "filename": "samples/CAM_FRONT/k1.png", "is_key_frame": true},
        {"token": "c", "sample_token": "s1", "filename": "sweeps/CAM_FRONT/x.png", "is_key_frame": false},
    ]);
    std::fs::write(root.join("v1.0-mini/sample_data.json"), meta.to_string()).unwrap();
    let q = |token: &str, question: &str, answer: serde_json::Value, kind: &str, hop: u64| {
        serde_json::json!({"sample_token": token, "question": question, "answer": answer,
            "num_hop": hop, "template_type": kind})
    };
    let data = dir.path().join("NuScenes_val_questions.json");
    let questions = serde_json::json!({"questions": [
        q("s1", "Are there any cars?", serde_json::json!("yes"), "exist", 0),
        q("s1", "How many buses are there?", serde_json::json!(0), "count", 1),
        q("s9", "Is the truck moving?", serde_json::json!("no"), "status", 0),
    ]});
    std::fs::write(&data, questions.to_string()).unwrap();
    let out = dir.path().join("out");
    let (code, v, err) = eval_run("nuscenes-qa", &data, &root, &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["samples"].as_u64(), v["errors"].as_u64()), (Some(3), Some(1)), "{v}");
    let acc = &v["scores"]["accuracy"];
    assert_eq!(acc["Overall"]["total"], 2, "the key frame without cameras is not scored: {v}");
    assert_eq!(acc["count_1"]["total"], 1, "{v}");
    assert_eq!(v["scores"]["normaliser"], "nuscenesqa_v1");
    let lines = sample_lines(&out.join("samples_nuscenes_qa.jsonl"));
    // Two cameras of 16 patches each, in nuScenes order.
    assert_eq!(lines[0]["record"]["visual_tokens"][0], serde_json::json!(["encoder", 32]));
    assert!(lines[2]["error"].as_str().unwrap().contains("s9"), "{}", lines[2]);
    // Without the metadata, the data root is wrong: one line, exit 2.
    let (code, _, err) = eval_run("nuscenes-qa", &data, dir.path(), &out, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sample_data.json"), "{err}");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn eval_lingoqa_reads_parquet_judges_and_writes_predictions_csv() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("images/val/seg1");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..2u8 {
        let img = image::RgbImage::from_fn(64, 36, |x, y| image::Rgb([(x * 4) as u8, (y * 7) as u8, 90 * i]));
        img.save(frames.join(format!("{i}.png"))).unwrap();
    }
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/lingoqa_val.parquet");
    let out = dir.path().join("out");
    let (code, v, err) = eval_run("lingoqa", &data, dir.path(), &out, &["--judge", "echo 1.5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["samples"].as_u64(), v["errors"].as_u64()), (Some(2), Some(0)), "{v}");
    assert_eq!(v["scores"]["lingo_judge"], 100.0, "every logit is positive: {v}");
    assert_eq!(v["scores"]["judged"], 2);
    assert!(v["scores"]["language"]["CIDEr"].is_number(), "{v}");
    let lines = sample_lines(&out.join("samples_lingoqa.jsonl"));
    assert_eq!(lines[0]["record"]["visual_tokens"][0], serde_json::json!(["encoder", 32]), "two frames");
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert!(csv.starts_with("question_id,segment_id,answer\nq1,seg1,"), "{csv}");
    assert_eq!(csv.lines().count(), 3);
    // A negative logit is a wrong answer; no judge means not scored.
    let (_, v, _) = eval_run("lingoqa", &data, dir.path(), &out, &["--resume", "--judge", "echo -0.5"]);
    assert_eq!(v["scores"]["lingo_judge"], 0.0, "{v}");
    let (_, v, _) = eval_run("lingoqa", &data, dir.path(), &out, &["--resume"]);
    assert!(v["scores"]["lingo_judge"].is_null() && v["scores"]["not_scored"][0].is_string(), "{v}");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn ask_runs_llava_onevision_on_video_images_and_one_photo() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_onevision");
    let video = asset("videos/bikes.mp4");
    let record = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["ask", "--model", model, "--max-new-tokens", "2", "--json"];
        all.extend_from_slice(args);
        all.push("what is there");
        let (code, out, err) = tokensieve(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["record"].clone()
    };
    let tokens = |r: &serde_json::Value| r["visual_tokens"].as_array().unwrap().last().unwrap()[1].as_u64().unwrap();
    let prefill = |r: &serde_json::Value| r["prefill_tokens"].as_u64().unwrap();
    // Video: 4 frames x (4x4 patches pooled to 2x2) = 16 visual tokens, then one newline.
    let full = record(&["--video", &video, "--frames", "4"]);
    let pruned = record(&["--video", &video, "--frames", "4", "--pruner", "todre", "--keep", "6"]);
    assert_eq!((tokens(&full), tokens(&pruned)), (16, 6));
    assert_eq!(prefill(&full) - prefill(&pruned), 10, "the newline stays; 10 fewer visual positions");
    // Two images: base views of 16 tokens with a newline after each image's survivors.
    let a = asset("images/chelsea.png");
    let b = asset("images/coffee.png");
    let two = record(&["--image", &a, "--image", &b]);
    let two_pruned = record(&["--image", &a, "--image", &b, "--pruner", "divprune", "--keep", "10"]);
    assert_eq!((tokens(&two), tokens(&two_pruned)), (32, 10));
    assert_eq!(prefill(&two) - prefill(&two_pruned), 22);
    // One 451x300 photo: the base view plus any-resolution tiles, packed with row newlines.
    let one = record(&["--image", &a]);
    assert!(tokens(&one) > 16, "base view plus tiles: {one}");
}

/// Every model command answers bad input with one error line (and at most a hint), exit 2 for what the user must
/// change and 1 for what failed while running.
#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn model_commands_reject_bad_input_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let empty = empty.to_str().unwrap();
    let video = asset("videos/bikes.mp4");
    let model = TINY_LLAVA;
    let out = dir.path().join("o");
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["ask", "--model", "/no/such/model", "--video", &video, "q"], 2, "does not exist"),
        (vec!["ask", "--model", "nobody/no-model", "--video", &video, "q"], 2, "models--nobody--no-model"),
        (vec!["ask", "--model", model, "--video", empty, "q"], 1, "empty.mp4"),
        (vec!["ask", "--model", model, "--video", &video, "--keep", "0", "q"], 2, "keep 0"),
        (vec!["ask", "--model", model, "--video", &video, "--pruner", "nope", "q"], 2, "unknown method"),
        (vec!["ask", "--model", model, "--video", &video, "--sampler", "f3c", "q"], 2, "unknown"),
        (vec!["ask", "--model", model, "--video", &video, "--sampler", "f2c", "q"], 2, "needs a dual encoder"),
        (vec!["ask", "--model", model, "--video", &video, "--in-llm", "sparsevlm", "q"], 2, "2 layers"),
        (vec!["ask", "--model", model, "--video", &video, "--in-llm", "nonesuch", "q"], 2, "unknown"),
        (vec!["ask", "--model", model, "--video", &video, "--in-llm", "pdrop", "q"], 2, "2 layers"),
        (vec!["ask", "--model", model, "--video", &video, "--image", &video, "q"], 2, "cannot be mixed"),
        (
            vec![
                "compress",
                "--model",
                "/no/such/model",
                "--video",
                &video,
                "--pruner",
                "todre",
                "--keep",
                "4",
                "--out",
                out,
            ],
            2,
            "/no/such/model",
        ),
        (
            vec!["compress", "--model", model, "--video", &video, "--pruner", "nope", "--keep", "4", "--out", out],
            2,
            "unknown method",
        ),
        (
            vec!["compress", "--model", model, "--video", &video, "--pruner", "todre", "--keep", "0", "--out", out],
            2,
            "keep 0",
        ),
        (
            vec!["compress", "--model", model, "--video", empty, "--pruner", "todre", "--keep", "4", "--out", out],
            1,
            "empty.mp4",
        ),
        (vec!["bench", "--model", model, "--video", &video, "--budgets", "0%"], 2, "0%"),
        (vec!["bench", "--model", model, "--video", &video, "--pruner", "nope"], 2, "unknown method"),
        (vec!["bench", "--model", model, "--video", empty], 1, "empty.mp4"),
        (vec!["forward", "--model", "/no/such/model.gguf", "--prompt", "hi"], 2, "/no/such/model.gguf"),
        (vec!["bench", "--model", "/no/such/model", "--video", &video], 2, "does not exist"),
        (vec!["sample", empty, "--frames", "4"], 1, "empty.mp4"),
        (vec!["sample", &video, "--frames", "0"], 2, "at least one frame"),
        (
            vec![
                "eval",
                "--task",
                "videomme",
                "--data",
                "/no/data.parquet",
                "--data-root",
                out,
                "--model",
                model,
                "--out",
                out,
            ],
            1,
            "/no/data.parquet",
        ),
        (
            vec!["eval", "--task", "drivelm", "--data", empty, "--data-root", out, "--model", model, "--out", out],
            2,
            "empty.mp4",
        ),
        (vec!["score", "--task", "caption", "--predictions", "/no/p.jsonl"], 1, "/no/p.jsonl"),
        (vec!["init-model", "--preset", "huge", "--out", out], 2, "huge"),
        (vec!["ask", "--model", model, "--video", &video, "--backend", "onnx", "q"], 2, "not an ONNX export"),
        (vec!["bench", "--model", model, "--video", &video, "--backend", "onnx"], 2, "not an ONNX export"),
        (vec!["ask", "--model", model, "--video", &video, "--threads", "2", "q"], 2, "--threads"),
        (
            vec!["ask", "--model", TINY_LLAVA_ONNX, "--video", &video, "--backend", "onnx", "--device", "cpu", "q"],
            2,
            "--device",
        ),
        (
            vec!["ask", "--model", TINY_LLAVA_ONNX, "--video", &video, "--backend", "onnx", "--dtype", "f16", "q"],
            2,
            "--dtype",
        ),
    ];
    for (args, code, text) in cases {
        let (got, stdout, err) = tokensieve(&args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(stdout.trim().is_empty(), "{args:?} printed {stdout}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("error: ") || first.starts_with("error:"), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: expected `{text}` in {err}");
        // clap's own usage errors add a usage line and a help pointer; ours are one line and a hint.
        let limit = if err.contains("For more information") { 5 } else { 2 };
        assert!(err.lines().filter(|l| !l.trim().is_empty()).count() <= limit, "{args:?}: {err}");
    }
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn init_model_writes_a_onevision_model_with_the_real_input_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("demo");
    let m = model.to_str().unwrap();
    let (code, out, err) = tokensieve(&["init-model", "--preset", "demo", "--out", m]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RANDOM weights"), "{out}");
    let (code, out, _) = tokensieve(&["init-model", "--out", m]);
    assert_eq!(code, 0);
    assert!(out.contains("already there"), "{out}");
    let r = todre_at_ten_percent(m, "videos/vtest.avi", "2");
    // SigLIP 384 px / patch 14: 27x27 patches, pooled to 14x14 per frame.
    assert_eq!(r["visual_tokens"], serde_json::json!([["encoder", 392], ["todre", 39]]), "{r}");
}

/// The record of `ask` with ToDRE at 10 % on `frames` frames of the sample `video`, on the model at `model`.
#[cfg(all(feature = "torch", feature = "video"))]
fn todre_at_ten_percent(model: &str, video: &str, frames: &str) -> serde_json::Value {
    let video = asset(video);
    let args = ["ask", "--model", model, "--video", &video, "--frames", frames, "--pruner", "todre", "--ratio", "0.1"];
    let mut args = args.to_vec();
    args.extend_from_slice(&["--max-new-tokens", "2", "--json", "what happens"]);
    let (code, out, err) = tokensieve(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["record"].clone()
}

/// `init-model --preset qwen3-vl-demo`: the real Qwen3-VL geometry (patch 16, 2 x 2 merger, the video's pixels bounded
/// over all frames) with narrow layers, runnable at once.
#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn init_model_writes_a_qwen3_vl_model_with_the_real_input_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("qwen3");
    let m = model.to_str().unwrap();
    let (code, out, err) = tokensieve(&["init-model", "--preset", "qwen3-vl-demo", "--out", m]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("qwen3_vl with RANDOM weights"), "{out}");
    let r = todre_at_ten_percent(m, "videos/bikes.mp4", "4");
    // 640 x 272 frames: smart_resize to multiples of 32 (272 / 32 = 8.5 rounds to 8) gives 256 x 640, 16 x 40
    // patches, 8 x 20 merged tokens per temporal patch, two temporal patches.
    assert_eq!(r["visual_tokens"], serde_json::json!([["encoder", 320], ["todre", 32]]), "{r}");
}

#[cfg(feature = "torch")]
#[test]
fn ask_samples_reproducibly_and_stops_at_stop_strings() {
    let gguf = asset("llm/SmolLM2-135M-Instruct.Q4_1.gguf");
    let ask = |extra: &[&str]| -> String {
        let mut args = vec!["ask", "--model", &gguf, "--max-new-tokens", "24", "--json"];
        args.extend_from_slice(extra);
        args.push("Write one sentence about the sea.");
        let (code, out, err) = tokensieve(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["answer"].as_str().unwrap().to_string()
    };
    let sampled = ask(&["--temperature", "1.0", "--top-p", "0.95", "--seed", "3"]);
    assert_eq!(sampled, ask(&["--temperature", "1.0", "--top-p", "0.95", "--seed", "3"]), "same seed, same answer");
    let others: Vec<String> =
        ["4", "5", "6"].iter().map(|s| ask(&["--temperature", "1.0", "--top-p", "0.95", "--seed", s])).collect();
    assert!(others.iter().any(|o| *o != sampled), "different seeds never changed the answer: {sampled}");
    let greedy = ask(&[]);
    let word = greedy.split_whitespace().nth(2).expect("a few words").to_string();
    let stopped = ask(&["--stop", &word]);
    assert!(!stopped.contains(&word) && greedy.starts_with(stopped.trim_end()), "{greedy:?} / {stopped:?}");
    let (code, _, err) = tokensieve(&["ask", "--model", &gguf, "--top-p", "0", "hi"]);
    assert_eq!(code, 2, "{err}");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn forward_expands_onevision_placeholders_like_the_processor() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_onevision");
    let (a, b) = (asset("images/chelsea.png"), asset("images/coffee.png"));
    let run = |args: &[&str]| -> (i32, serde_json::Value, String) {
        let mut all = vec!["forward", "--model", model, "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = tokensieve(&all);
        (code, serde_json::from_str(out.trim()).unwrap_or_default(), err)
    };
    // Two images, one placeholder each, verbatim: 2 x (16 + newline) visual tokens.
    let (code, v, err) = run(&["--image", &a, "--image", &b, "--raw", "--prompt", "<image> <image> what"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["visual_tokens"].as_u64(), v["prompt_tokens"].as_u64()), (Some(34), Some(35)));
    // A video through the chat template: 3 frames x 2x2 pooled + newline under one <video>.
    let video = asset("videos/cup.mp4");
    let (code, v, err) = run(&["--video", &video, "--frames", "3", "--prompt", "what is there"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["visual_tokens"], 13);
    let (code, _, err) = run(&["--image", &a, "--raw", "--prompt", "<image> <image> x"]);
    assert_eq!(code, 2, "two placeholders for one image: {err}");
}

#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn eval_em_vlm4ad_protocol_dedupes_prompts_and_drops_long_answers() {
    let dir = tempfile::tempdir().unwrap();
    drivelm_records(dir.path());
    let data = dir.path().join("multi_frame_test.json");
    let cams = serde_json::json!({"CAM_FRONT": "nuscenes/samples/CAM_FRONT/a.png", "CAM_BACK": "nuscenes/samples/CAM_BACK/a.png"});
    let pair = |q: &str, a: &str| serde_json::json!([{"Q": q, "A": a}, cams]);
    let list =
        serde_json::json!([pair("What is ahead?", "A car."), pair("What is ahead?", "A car."), pair("Stop?", "No.")]);
    std::fs::write(&data, list.to_string()).unwrap();
    let out = dir.path().join("out");
    let (code, v, err) = eval_run("em-vlm4ad", &data, dir.path(), &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["samples"], 2, "the duplicate pair is answered once: {v}");
    assert_eq!(v["scores"]["dropped_long_predictions"], 0);
    assert!(v["scores"]["language"]["CIDEr"].is_number(), "{v}");
    let lines = sample_lines(&out.join("samples_em_vlm4ad.jsonl"));
    assert_eq!(lines[0]["prompt"], "Question: What is ahead? Answer:");
    // Rescoring with max_len 0 drops every non-empty answer, as its eval.py drops over-long ones.
    let nonempty = lines.iter().filter(|l| !l["prediction"].as_str().unwrap_or("").is_empty()).count();
    let (code, out_json, err) = tokensieve(&[
        "merge",
        "--task",
        "em-vlm4ad",
        "--data",
        data.to_str().unwrap(),
        "--max-len",
        "0",
        "--out",
        dir.path().join("rescored").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let rescored: serde_json::Value = serde_json::from_str(&out_json).unwrap();
    assert_eq!(rescored["scores"]["dropped_long_predictions"], nonempty, "{rescored}");
}

/// `forward` on the two backends: the tiny LLaVA and its ONNX export give the same logits, visual tokens and CLS
/// attention on a real photo.
#[cfg(all(feature = "torch", feature = "video", feature = "onnx"))]
#[test]
fn forward_gives_the_same_outputs_on_torch_and_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let photo = asset("images/astronaut.png");
    let run = |backend: &str, model: &str| -> Vec<tokensieve::npy::NpyArray> {
        let files: Vec<std::path::PathBuf> =
            ["l", "f", "a"].iter().map(|n| dir.path().join(format!("{backend}_{n}.npy"))).collect();
        let (code, out, err) = tokensieve(&[
            "forward",
            "--backend",
            backend,
            "--model",
            model,
            "--image",
            &photo,
            "--prompt",
            "<s> what is in <image> the road",
            "--json",
            "--logits-out",
            files[0].to_str().unwrap(),
            "--features-out",
            files[1].to_str().unwrap(),
            "--cls-attn-out",
            files[2].to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{backend}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!((v["prompt_tokens"].as_u64(), v["visual_tokens"].as_u64()), (Some(22), Some(16)), "{backend}");
        files.iter().map(|f| tokensieve::npy::read(f).unwrap()).collect()
    };
    let onnx_model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_llava_onnx");
    let torch = run("torch", TINY_LLAVA);
    let onnx = run("onnx", onnx_model);
    for (what, (a, b)) in ["logits", "visual tokens", "CLS attention"].iter().zip(torch.iter().zip(&onnx)) {
        assert_eq!(a.shape, b.shape, "{what}");
        let d = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(d <= 1e-4, "{what} differ by {d}");
    }
    let ov = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_onevision");
    let (code, _, err) =
        tokensieve(&["forward", "--backend", "onnx", "--model", ov, "--image", &photo, "--prompt", "x"]);
    assert_eq!(code, 2, "no onnx/ folder or not llava: {err}");
}

/// The committed ONNX exports of the tiny fixtures (`models/export/export_onnx.py`, `make fixtures`).
#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
const TINY_LLAVA_ONNX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_llava_onnx");
#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
const TINY_ONEVISION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_onevision");
#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
const TINY_ONEVISION_ONNX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_onevision_onnx");

/// `ask --json` on one backend: the answer and the record.
#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
fn ask_on(backend: &str, model: &str, args: &[&str]) -> (String, serde_json::Value) {
    let mut all = vec!["ask", "--backend", backend, "--model", model, "--max-new-tokens", "20", "--json"];
    all.extend_from_slice(args);
    all.push("what is there");
    let (code, out, err) = tokensieve(&all);
    assert_eq!(code, 0, "{backend} {args:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    (v["answer"].as_str().unwrap().to_string(), v["record"].clone())
}

#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
#[test]
fn ask_gives_the_same_answers_on_torch_and_onnx_with_and_without_pruners() {
    let video = asset("videos/bikes.mp4");
    let (a, b) = (asset("images/chelsea.png"), asset("images/coffee.png"));
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (TINY_LLAVA, TINY_LLAVA_ONNX, vec!["--image", &a]),
        (TINY_LLAVA, TINY_LLAVA_ONNX, vec!["--video", &video, "--frames", "3", "--pruner", "todre", "--ratio", "0.25"]),
        (
            TINY_LLAVA,
            TINY_LLAVA_ONNX,
            vec![
                "--video",
                &video,
                "--frames",
                "3",
                "--pruner",
                "todre",
                "--ratio",
                "0.25",
                "--positions",
                "contiguous",
            ],
        ),
        // CLS attention from the export's extra output drives VisionZip exactly as the torch tower's does.
        (TINY_LLAVA, TINY_LLAVA_ONNX, vec!["--image", &a, "--image", &b, "--pruner", "visionzip", "--keep", "8"]),
        (TINY_ONEVISION, TINY_ONEVISION_ONNX, vec!["--video", &video, "--frames", "4"]),
        (
            TINY_ONEVISION,
            TINY_ONEVISION_ONNX,
            vec!["--video", &video, "--frames", "4", "--pruner", "divprune", "--keep", "6"],
        ),
        (TINY_ONEVISION, TINY_ONEVISION_ONNX, vec!["--image", &a, "--image", &b, "--pruner", "todre", "--keep", "10"]),
        // One photo: any-resolution tiles packed on the host with row newlines, then a chain of two pruners.
        (
            TINY_ONEVISION,
            TINY_ONEVISION_ONNX,
            vec!["--image", &a, "--pruner", "kcenter", "--pruner", "todre", "--ratio", "0.5"],
        ),
    ];
    for (torch_model, onnx_model, args) in cases {
        let (torch_answer, torch) = ask_on("torch", torch_model, &args);
        let (onnx_answer, onnx) = ask_on("onnx", onnx_model, &args);
        assert!(!torch_answer.is_empty(), "{args:?}");
        assert_eq!(torch_answer, onnx_answer, "{args:?}: greedy answers");
        for key in ["visual_tokens", "prefill_tokens", "generated_tokens", "decode_steps", "llm_macs_swiglu"] {
            assert_eq!(torch[key], onnx[key], "{args:?}: {key}");
        }
    }
}

#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
#[test]
fn onnx_backend_refuses_in_decoder_pruning_and_torch_only_flags() {
    let video = asset("videos/bikes.mp4");
    for spec in ["fastv:layer=1,ratio=0.5", "pdrop:layers=1,lambda=0.5", "todre-stage2:tau=0.1"] {
        let (code, _, err) = tokensieve(&[
            "ask",
            "--backend",
            "onnx",
            "--model",
            TINY_ONEVISION_ONNX,
            "--video",
            &video,
            "--in-llm",
            spec,
            "x",
        ]);
        assert_eq!(code, 2, "{spec}");
        assert!(err.contains("not supported on the onnx backend"), "{spec}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "one line: {err}");
    }
    let (code, _, err) = tokensieve(&["ask", "--model", TINY_LLAVA, "--video", &video, "--precision", "fp16", "x"]);
    assert_eq!(code, 2, "--precision picks ONNX files: {err}");
    assert!(err.contains("chooses ONNX graph files") && err.contains("torch takes fp32 or q8"), "{err}");
    // q8 on torch holds the decoder's linear weights as int8; the tower and the pruners are untouched, so the
    // kept tokens are the same as with dense weights.
    let kept = |precision: &str| {
        let (code, out, err) = tokensieve(&[
            "ask",
            "--model",
            TINY_LLAVA,
            "--video",
            &video,
            "--device",
            "cpu",
            "--precision",
            precision,
            "--pruner",
            "todre",
            "--ratio",
            "0.5",
            "--max-new-tokens",
            "3",
            "--json",
            "x",
        ]);
        assert_eq!(code, 0, "{precision}: {err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["record"]["kept"].clone()
    };
    let dense = kept("fp32");
    assert!(dense.as_array().is_some_and(|k| !k.is_empty()), "{dense}");
    assert_eq!(kept("q8"), dense);
    let (code, _, err) = tokensieve(&[
        "ask",
        "--backend",
        "onnx",
        "--model",
        TINY_LLAVA_ONNX,
        "--video",
        &video,
        "--precision",
        "q3",
        "x",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("q3"), "{err}");
}

#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
#[test]
fn compress_and_bench_run_on_both_backends_with_the_same_selection() {
    let video = asset("videos/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    for (torch_model, onnx_model, pruner) in
        [(TINY_LLAVA, TINY_LLAVA_ONNX, "visionzip"), (TINY_ONEVISION, TINY_ONEVISION_ONNX, "todre")]
    {
        let kept = |backend: &str, model: &str| -> serde_json::Value {
            let out_dir = dir.path().join(backend);
            let (code, out, err) = tokensieve(&[
                "compress",
                "--backend",
                backend,
                "--model",
                model,
                "--video",
                &video,
                "--frames",
                "3",
                "--pruner",
                pruner,
                "--ratio",
                "0.25",
                "--out",
                out_dir.to_str().unwrap(),
                "--json",
            ]);
            assert_eq!(code, 0, "{backend}: {err}");
            assert!(out_dir.join("kept.png").is_file());
            let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(v["backend"], backend);
            json_pick(&v, &["kept", "visual_tokens"])
        };
        assert_eq!(kept("torch", torch_model), kept("onnx", onnx_model), "{pruner}");
    }
    let plot = dir.path().join("bench.png");
    let rows = |backend: &str, model: &str| -> Vec<serde_json::Value> {
        let (code, out, err) = tokensieve(&[
            "bench",
            "--backend",
            backend,
            "--model",
            model,
            "--video",
            &video,
            "--frames",
            "3",
            "--repeats",
            "1",
            "--budgets",
            "100%,10%",
            "--new-tokens",
            "4",
            "--plot",
            plot.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code, 0, "{backend}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["rows"].as_array().unwrap().clone()
    };
    let (torch, onnx) = (rows("torch", TINY_ONEVISION), rows("onnx", TINY_ONEVISION_ONNX));
    assert_eq!(onnx.len(), 2);
    for (t, o) in torch.iter().zip(&onnx) {
        assert_eq!(
            json_pick(t, &["visual_tokens", "prefill_tokens", "kv_bytes"]),
            json_pick(o, &["visual_tokens", "prefill_tokens", "kv_bytes"])
        );
        assert!(o["prefill_tokens_per_s"].as_f64().unwrap() > 0.0, "{o}");
        assert_eq!(o["decode_steps"], t["decode_steps"]);
    }
}

/// The listed keys of a JSON object.
#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
fn json_pick(v: &serde_json::Value, keys: &[&str]) -> serde_json::Value {
    serde_json::Value::Object(keys.iter().map(|k| (k.to_string(), v[*k].clone())).collect())
}

#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
#[test]
fn compress_runs_a_custom_onnx_encoder_with_its_processor() {
    let video = asset("videos/bikes.mp4");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/custom_encoder");
    let (encoder, processor) = (format!("{fixtures}/encoder.onnx"), format!("{fixtures}/preprocessor_config.json"));
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("c");
    let base = ["compress", "--model", &encoder, "--video", &video, "--frames", "3", "--pruner", "divprune"];
    let mut args = base.to_vec();
    args.extend(["--backend", "onnx", "--processor", &processor, "--ratio", "0.25", "--json"]);
    args.extend(["--out", out_dir.to_str().unwrap()]);
    let (code, out, err) = tokensieve(&args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["visual_tokens"]["before"], 48, "3 frames x 4x4 patches");
    assert_eq!(v["visual_tokens"]["after"], 12);
    let per_frame: u64 = v["visual_tokens"]["per_frame"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(per_frame, 12);
    assert!(out_dir.join("kept.png").is_file());
    let mut no_processor = base.to_vec();
    no_processor.extend(["--backend", "onnx", "--ratio", "0.25", "--out", out_dir.to_str().unwrap()]);
    let (code, _, err) = tokensieve(&no_processor);
    assert_eq!(code, 2, "an encoder needs its processor: {err}");
    let mut on_torch = base.to_vec();
    on_torch.extend(["--processor", &processor, "--ratio", "0.25", "--out", out_dir.to_str().unwrap()]);
    let (code, _, err) = tokensieve(&on_torch);
    assert_eq!(code, 2, "an .onnx encoder runs on the onnx backend: {err}");
}

#[cfg(all(feature = "torch", feature = "onnx", feature = "video"))]
#[test]
fn eval_answers_the_same_on_torch_and_onnx() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink(asset("videos/bikes.mp4"), dir.path().join("data/bikes.mp4")).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/videomme_test.parquet");
    let run = |backend: &str, model: &str| -> Vec<(String, String)> {
        let out = dir.path().join(backend);
        let extra = ["--backend", backend, "--frames", "2", "--pruner", "todre", "--keep", "8"];
        let (code, _, err) = eval_run_on(model, "videomme", &data, dir.path(), &out, &extra);
        assert_eq!(code, 0, "{backend}: {err}");
        let text = std::fs::read_to_string(out.join("samples_videomme.jsonl")).unwrap();
        let mut lines: Vec<(String, String)> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["id"].as_str().unwrap().to_string(), format!("{} {}", v["prediction"], v["error"])))
            .collect();
        lines.sort();
        lines
    };
    let torch = run("torch", TINY_LLAVA);
    assert_eq!(torch.len(), 3);
    assert_eq!(torch.iter().filter(|(_, p)| p.starts_with('"')).count(), 2, "two answered, one video missing");
    assert_eq!(torch, run("onnx", TINY_LLAVA_ONNX));
}

/// A checkpoint that does not fit its config (the token embeddings one column short) fails at load with one line
/// naming the tensor and both shapes, on every model command; no libtorch backtrace reaches the user.
#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn a_mis_shaped_checkpoint_is_one_line_naming_the_tensor_and_both_shapes() {
    use tokensieve::models::safetensors::{write, Safetensors, StoreAs};
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken_llava");
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(TINY_LLAVA).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&path, broken.join(path.file_name().unwrap())).unwrap();
        }
    }
    let source = Safetensors::open(&Path::new(TINY_LLAVA).join("model.safetensors")).unwrap();
    let name = "language_model.model.embed_tokens.weight";
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = source
        .names()
        .map(|n| {
            let (values, shape) = source.tensor_f32(n).unwrap();
            if n != name {
                return (n.to_string(), shape, values);
            }
            let (rows, cols) = (shape[0], shape[1]);
            let short: Vec<f32> = values.chunks(cols).flat_map(|r| r[..cols - 1].to_vec()).collect();
            (n.to_string(), vec![rows, cols - 1], short)
        })
        .collect();
    write(&broken.join("model.safetensors"), &tensors, StoreAs::F32).unwrap();
    let photo = asset("images/astronaut.png");
    let model = broken.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    for args in [
        vec!["ask", "--model", model, "--image", &photo, "what is there"],
        vec!["forward", "--model", model, "--image", &photo, "--prompt", "<image> x"],
        vec![
            "compress", "--model", model, "--image", &photo, "--image", &photo, "--pruner", "todre", "--ratio", "0.5",
            "--out", out,
        ],
    ] {
        let (code, _, err) = tokensieve(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() <= 2 && lines[0].starts_with("error"), "{args:?}: one line and a hint: {err}");
        assert!(err.contains(name) && err.contains("[64, 31]") && err.contains("[64, 32]"), "{args:?}: {err}");
        assert!(!err.contains("frame #") && !err.contains("Exception raised"), "{args:?}: {err}");
    }
}

#[cfg(feature = "video")]
const TINY_QWEN2_5_VL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_qwen2_5_vl");

#[cfg(feature = "video")]
const TINY_QWEN3_VL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures/tiny_qwen3_vl");

/// Qwen2.5-VL through every command that takes a vision-language model: `ask` pruned before the decoder, `forward`,
/// `compress`, `bench` at 100/25/10 % and `eval`.
#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn qwen2_5_vl_runs_ask_forward_compress_bench_and_eval() {
    qwen_runs_ask_forward_compress_bench_and_eval("torch", TINY_QWEN2_5_VL);
}

/// The same commands on both families' ONNX exports (`models/export/export_onnx.py`), as an ONNX-only build runs
/// them.
#[cfg(all(feature = "onnx", feature = "video"))]
#[test]
fn qwen_vl_exports_run_ask_forward_compress_bench_and_eval_on_onnx() {
    for model in [TINY_QWEN2_5_VL, TINY_QWEN3_VL] {
        qwen_runs_ask_forward_compress_bench_and_eval("onnx", &format!("{model}_onnx"));
    }
}

/// The same for Qwen3-VL (per-patch timestamps and DeepStack), with `--budget-scope frame`.
#[cfg(all(feature = "torch", feature = "video"))]
#[test]
fn qwen3_vl_runs_ask_forward_compress_bench_and_eval() {
    qwen_runs_ask_forward_compress_bench_and_eval("torch", TINY_QWEN3_VL);
    let video = asset("videos/bikes.mp4");
    let ask = ["ask", "--model", TINY_QWEN3_VL, "--video", video.as_str(), "--frames", "4", "--pruner", "divprune"];
    let mut ask = ask.to_vec();
    ask.extend_from_slice(&["--ratio", "0.25", "--budget-scope", "frame", "--max-new-tokens", "1", "--json", "what"]);
    let (code, out, err) = tokensieve(&ask);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let encoder = v["record"]["visual_tokens"][0][1].as_u64().unwrap() as usize;
    let kept: Vec<usize> =
        v["record"]["kept"].as_array().unwrap().iter().map(|k| k.as_u64().unwrap() as usize).collect();
    let first = kept.iter().filter(|&&k| k < encoder / 2).count();
    let k = (encoder as f64 * 0.25).round_ties_even() as usize;
    assert_eq!((first, kept.len() - first), (k.div_ceil(2), k / 2), "each temporal patch keeps its share: {v}");
}

/// `ask`, `forward`, `compress`, `bench` and `eval` on a Qwen-VL checkpoint (torch) or export (onnx).
#[cfg(feature = "video")]
fn qwen_runs_ask_forward_compress_bench_and_eval(backend: &str, model: &str) {
    let video = asset("videos/bikes.mp4");
    let common = ["--backend", backend, "--model", model, "--video", video.as_str(), "--frames", "4"];
    let mut ask = vec!["ask"];
    ask.extend_from_slice(&common);
    ask.extend_from_slice(&[
        "--pruner",
        "todre",
        "--ratio",
        "0.25",
        "--max-new-tokens",
        "3",
        "--json",
        "what is there",
    ]);
    let (code, out, err) = tokensieve(&ask);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let encoder = v["record"]["visual_tokens"][0][1].as_u64().unwrap();
    assert_eq!(v["record"]["kept"].as_array().unwrap().len() as u64, encoder / 4, "{v}");

    let mut forward = vec!["forward"];
    forward.extend_from_slice(&common);
    forward.extend_from_slice(&["--prompt", "what is there"]);
    let (code, out, err) = tokensieve(&forward);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("({encoder} visual)")), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let pictures = dir.path().join("compress");
    let mut compress = vec!["compress"];
    compress.extend_from_slice(&common);
    compress.extend_from_slice(&["--ratio", "0.25", "--out", pictures.to_str().unwrap(), "what is there"]);
    let (code, _, err) = tokensieve(&compress);
    assert_eq!(code, 0, "{err}");
    assert!(pictures.join("kept.png").is_file() && pictures.join("record.json").is_file());
    // Two photos that resize to two grids: one panel and one count each.
    let (a, b) = (asset("images/chelsea.png"), asset("images/astronaut.png"));
    let two = dir.path().join("two");
    let args = ["compress", "--backend", backend, "--model", model, "--image", &a, "--image", &b, "--ratio", "0.5"];
    let (code, _, err) = tokensieve(&[&args[..], &["--out", two.to_str().unwrap(), "what"]].concat());
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("record.json")).unwrap()).unwrap();
    let per_image: Vec<u64> =
        record["visual_tokens"]["per_frame"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(per_image.len(), 2, "{record}");
    assert_eq!(per_image.iter().sum::<u64>(), record["visual_tokens"]["after"].as_u64().unwrap(), "{record}");

    let plot = dir.path().join("bench.png");
    let mut bench = vec!["bench"];
    bench.extend_from_slice(&common);
    bench.extend_from_slice(&["--budgets", "100%,25%,10%", "--repeats", "1", "--new-tokens", "2", "--json"]);
    bench.extend_from_slice(&["--plot", plot.to_str().unwrap()]);
    let (code, out, err) = tokensieve(&bench);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kept: Vec<u64> =
        report["rows"].as_array().unwrap().iter().filter_map(|r| r["visual_tokens"].as_u64()).collect();
    assert_eq!(kept.len(), 3, "{out}");
    assert!(kept[0] > kept[1] && kept[1] > kept[2], "{kept:?}");

    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink(asset("videos/bikes.mp4"), dir.path().join("data/bikes.mp4")).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/videomme_test.parquet");
    let flags = ["--backend", backend, "--frames", "2", "--pruner", "todre", "--ratio", "0.25"];
    let (code, v, err) = eval_run_on(model, "videomme", &data, dir.path(), &dir.path().join("vm"), &flags);
    assert_eq!(code, 0, "{err}");
    assert_eq!((v["samples"].as_u64(), v["errors"].as_u64()), (Some(3), Some(1)), "{v}");
}
