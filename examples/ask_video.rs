//! Ask a vision-language model about a video with a quarter of its visual tokens, through the library's Pipeline.
//!
//! cargo run --release --all-features --example ask_video -- MODEL_DIR VIDEO ["question"]
//!
//! MODEL_DIR is a Hugging Face `llava`/`llava_onevision` folder (libtorch), or an ONNX export of one
//! (`models/export/export_onnx.py`; an `onnx/` folder inside), which runs on ONNX Runtime.

use tokensieve::models::onnx_session::{OnnxOptions, Precision};
use tokensieve::pipeline::builder::Pipeline;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, video, rest @ ..] = args.as_slice() else {
        return Err("usage: ask_video MODEL_DIR VIDEO [QUESTION]".into());
    };
    let question = rest.first().map_or("What happens in this video?", String::as_str);
    let mut builder =
        Pipeline::builder(model).sampler("uniform:frames=8")?.pruner("todre")?.ratio(0.25).max_new_tokens(24);
    if std::path::Path::new(model).join("onnx").is_dir() {
        builder = builder.onnx(Precision::Fp32, OnnxOptions::default());
    }
    let pipeline = builder.build()?;
    let answer = pipeline.ask_video(video.as_ref(), question)?;
    let r = &answer.record;
    println!("Q: {question}\nA: {}", answer.text.trim());
    println!(
        "{} frames -> {} visual tokens -> {} kept; prefill {} tokens; TTFT {:.0} ms ({:.0} ms with decoding)",
        r.frame_indices.len(),
        r.qa.visual_tokens[0].1,
        r.visual_tokens_kept(),
        r.qa.prefill_tokens,
        r.qa.ttft_ms,
        r.ttft_e2e_ms
    );
    Ok(())
}
