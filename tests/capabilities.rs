//! The capability table of the README, generated here: every pre-LLM method of the registry (`prune --list`) on
//! nine inputs, and every in-decoder rule on the four model families, each cell run through `tokensieve ask
//! --json` on the torch and the onnx backend with the tiny fixtures. A cell that runs must run on both backends with the same
//! kept indices (but for one near-tie swap, see [`agree`]), the same greedy answer and the same notes; a cell that cannot apply must be refused on both with a
//! one-line reason, which the table prints. The README's table between the `capabilities` markers must equal what
//! this test generates (`TOKENSIEVE_UPDATE_README=1 cargo test --all-features --test capabilities` rewrites it).

#![cfg(all(feature = "torch", feature = "onnx", feature = "video"))]

use std::path::Path;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tests/fixtures");

fn asset(name: &str) -> String {
    tokensieve::assets::require(name).expect("sample assets (run `make setup`)").display().to_string()
}

/// What `ask --json` did: the answer and record, or the one-line error.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ran { answer: String, kept: Vec<u64>, encoder: u64, layers: (u64, u64), notes: Vec<String> },
    Refused(String),
}

fn ask(backend: &str, model: &str, input: &[String], method: &[&str]) -> Outcome {
    let dir = if backend == "onnx" { format!("{FIXTURES}/{model}_onnx") } else { format!("{FIXTURES}/{model}") };
    let mut args: Vec<String> = ["ask", "--backend", backend, "--model", &dir, "--max-new-tokens", "6", "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(input.iter().cloned());
    args.extend(method.iter().map(|s| s.to_string()));
    args.push("what is there".into());
    let out = Command::new(env!("CARGO_BIN_EXE_tokensieve")).args(&args).output().expect("binary runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line, got {stderr}");
        assert!(!stderr.contains("backtrace") && !stderr.contains("panicked"), "{args:?}: {stderr}");
        return Outcome::Refused(errors[0].trim_start_matches("error: ").to_string());
    }
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let r = &v["record"];
    Outcome::Ran {
        answer: v["answer"].as_str().unwrap().to_string(),
        kept: r["kept"].as_array().unwrap().iter().map(|k| k.as_u64().unwrap()).collect(),
        encoder: r["visual_tokens"][0][1].as_u64().unwrap(),
        layers: {
            let per_layer: Vec<u64> =
                r["tokens_per_layer"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
            (per_layer[0], per_layer[per_layer.len() - 1])
        },
        notes: r["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect(),
    }
}

/// The two backends' runs of one cell agree: the same answer, token counts and notes, and the same kept tokens but
/// for at most one swap. The towers are two implementations of the same f32 model (within 1e-5 of each other in the
/// parity tests), so a greedy selector's last pick may land on either side of a near-tie, differently on another
/// CPU (its kernels sum in another order): seen on `todre` at 25 % of the tiny OneVision's any-resolution photo,
/// which keeps token 45 on torch and 27 on onnx on an AVX-512 machine and the same token on others. Equal picks on
/// equal features are tested in the pruners crate (`torch_parity.rs`, the official fixtures).
fn agree(torch: &Outcome, onnx: &Outcome, kept: &[u64], other: &[u64], cell: &str) {
    let only = |a: &[u64], b: &[u64]| a.iter().filter(|i| !b.contains(i)).count();
    assert!(kept.len() == other.len() && only(kept, other) <= 1, "{cell}: the backends keep {kept:?} and {other:?}");
    assert_eq!(without_kept(torch), without_kept(onnx), "{cell}: the backends differ");
}

/// What must match between the backends besides the kept set.
fn without_kept(o: &Outcome) -> String {
    match o {
        Outcome::Ran { answer, encoder, layers, notes, .. } => format!("{answer:?} {encoder} {layers:?} {notes:?}"),
        Outcome::Refused(why) => why.clone(),
    }
}

/// Methods whose picks follow the full rank order of the attention signal, not just its top: VisPruner splits the
/// residual into even and odd ranks, so one swap of two adjacent ranks changes which tokens are compared. On the tiny
/// random Qwen-VL towers the attention each merged token receives is nearly uniform (all 320 values of the video
/// within 0.3 % of each other, neighbours 5e-9 apart) while the two backends' attention differ by up to 3e-9
/// (`models/tests/onnx_parity.rs::onnx_qwen_vl_signals_equal_the_torch_tap` bounds it), so their ranks differ and so
/// do the picks. These cells must still run on both backends with the same counts; the table marks them (on every
/// machine, so the README does not depend on the CPU).
const RANK_ORDER_METHODS: &[&str] = &["vispruner"];

/// One cell: both backends (in parallel), checked against each other; the cell's text and the refusal or notes to
/// list. Pre-LLM cells read `kept/encoder` visual tokens; in-decoder cells the prompt tokens of the first and the
/// last decoder layer.
fn cell(model: &str, input: &[String], method: &[&str], in_decoder: bool) -> (String, Option<String>) {
    let text = |kept: &[u64], encoder: u64, layers: (u64, u64)| match in_decoder {
        false => format!("{}/{encoder}", kept.len()),
        true => format!("{} -> {} tokens", layers.0, layers.1),
    };
    let (torch, onnx) = std::thread::scope(|s| {
        let onnx = s.spawn(|| ask("onnx", model, input, method));
        (ask("torch", model, input, method), onnx.join().unwrap())
    });
    match (&torch, &onnx) {
        (
            Outcome::Ran { kept, encoder, layers, notes, .. },
            Outcome::Ran { kept: other, encoder: other_encoder, layers: other_layers, .. },
        ) if model.contains("qwen") && method.get(1).is_some_and(|m| RANK_ORDER_METHODS.contains(m)) => {
            let cell = format!("{model} {input:?} {method:?}");
            assert_eq!((kept.len(), encoder, layers), (other.len(), other_encoder, other_layers), "{cell}");
            // Whether (and how many) tokens differ depends on the CPU's kernels; the table must not, so these cells
            // are marked whether or not the sets happen to agree here.
            let note = "onnx keeps as many tokens, not always the same ones: the method follows the full rank of the \
                        tiny tower's nearly uniform attention (`RANK_ORDER_METHODS` in tests/capabilities.rs)"
                .to_string();
            let notes = if notes.is_empty() { note } else { format!("{}; {note}", notes.join("; ")) };
            (format!("{} (torch)", text(kept, *encoder, *layers)), Some(notes))
        }
        (Outcome::Ran { kept, encoder, layers, notes, .. }, Outcome::Ran { kept: other, .. }) => {
            agree(&torch, &onnx, kept, other, &format!("{model} {input:?} {method:?}"));
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            (text(kept, *encoder, *layers), note)
        }
        (Outcome::Ran { kept, encoder, layers, notes, .. }, Outcome::Refused(why)) if in_decoder => {
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            assert!(why.contains("onnx backend"), "{why}");
            (format!("{} (torch)", text(kept, *encoder, *layers)), note)
        }
        (Outcome::Refused(a), Outcome::Refused(b)) => {
            assert_eq!(a, b, "{model} {input:?} {method:?}: refused for different reasons");
            ("no".to_string(), Some(a.clone()))
        }
        _ => panic!("{model} {input:?} {method:?}: torch {torch:?} but onnx {onnx:?}"),
    }
}

fn table() -> String {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (a, b, c) = (asset("images/chelsea.png"), asset("images/coffee.png"), asset("images/astronaut.png"));
    let video = asset("videos/bikes.mp4");
    let views = s(&[
        "--views",
        &format!("CAM_FRONT={a}"),
        "--views",
        &format!("CAM_FRONT_LEFT={b}"),
        "--views",
        &format!("CAM_FRONT_RIGHT={c}"),
    ]);
    let inputs: Vec<(&str, &str, Vec<String>)> = vec![
        ("LLaVA image", "tiny_llava", s(&["--image", &a])),
        ("LLaVA two images", "tiny_llava", s(&["--image", &a, "--image", &b])),
        ("OneVision any-res image", "tiny_onevision", s(&["--image", &c])),
        ("OneVision video", "tiny_onevision", s(&["--video", &video, "--frames", "4"])),
        ("OneVision camera views", "tiny_onevision", views),
        ("Qwen2.5-VL image", "tiny_qwen2_5_vl", s(&["--image", &a])),
        ("Qwen2.5-VL video", "tiny_qwen2_5_vl", s(&["--video", &video, "--frames", "4"])),
        ("Qwen3-VL image", "tiny_qwen3_vl", s(&["--image", &a])),
        ("Qwen3-VL video", "tiny_qwen3_vl", s(&["--video", &video, "--frames", "4"])),
    ];
    let mut out = String::from("| method |");
    for (name, _, _) in &inputs {
        out += &format!(" {name} |");
    }
    out += "\n|---|";
    out += &"---|".repeat(inputs.len());
    out += "\n";
    let mut footnotes: Vec<String> = Vec::new();
    let mark = |text: String, note: Option<String>, footnotes: &mut Vec<String>| match note {
        Some(n) => {
            let i = footnotes.iter().position(|f| *f == n).unwrap_or_else(|| {
                footnotes.push(n);
                footnotes.len() - 1
            });
            format!("{text} [{}]", i + 1)
        }
        None => text,
    };
    for info in tokensieve::pruners::METHODS {
        out += &format!("| `{}` |", info.name);
        for (_, model, input) in &inputs {
            let (text, note) = cell(model, input, &["--pruner", info.name, "--ratio", "0.25"], false);
            out += &format!(" {} |", mark(text, note, &mut footnotes));
        }
        out += "\n";
    }
    out += "\n| in-decoder rule | LLaVA image | OneVision video | Qwen2.5-VL video | Qwen3-VL video |\n|---|---|---|---|---|\n";
    let rules = [
        "fastv:layer=1,ratio=0.5",
        "pdrop:layers=1,lambda=0.5",
        "todre-stage2:tau=0.1,layer=0",
        "sparsevlm:layers=0,counts=6",
        "holitom-inner:layer=1",
        "dycoke-kv:layer=1",
        "dart:layer=1,ratio=0.5",
    ];
    for rule in rules {
        out += &format!("| `{rule}` |");
        for (_, model, input) in [&inputs[0], &inputs[3], &inputs[6], &inputs[8]] {
            let (text, note) = cell(model, input, &["--in-llm", rule], true);
            out += &format!(" {} |", mark(text, note, &mut footnotes));
        }
        out += "\n";
    }
    out +=
        "\nCells: kept / encoder visual tokens at `--ratio 0.25`; for in-decoder rules, the prompt tokens the first and \
         the last decoder layer see (DyCoke's KV rule acts while decoding: it changes which cached visual keys later \
         layers attend to, not the count). Identical kept indices, answers and notes on torch and onnx unless marked (torch: \
         the onnx backend refuses in-decoder rules, or keeps other tokens where the note says so); `no`: refused with the \
         reason below. Notes the methods \
         recorded:\n\n";
    for (i, f) in footnotes.iter().enumerate() {
        out += &format!("{}. {}\n", i + 1, f.replace('|', "\\|"));
    }
    out
}

#[test]
fn every_method_runs_on_every_input_or_says_why_and_the_readme_shows_it() {
    let generated = table();
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (start, end) = ("<!-- capabilities:start -->\n", "<!-- capabilities:end -->");
    let (a, b) = (readme.find(start).expect("README has the capabilities markers"), readme.find(end).unwrap());
    let current = &readme[a + start.len()..b];
    if std::env::var_os("TOKENSIEVE_UPDATE_README").is_some() {
        let updated = format!("{}{start}{generated}{}", &readme[..a], &readme[b..]);
        std::fs::write(&readme_path, updated).unwrap();
    } else {
        assert_eq!(current, generated, "the README's capability table is stale: rerun with TOKENSIEVE_UPDATE_README=1");
    }
}
