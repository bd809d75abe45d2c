//! `tokensieve init-model`: writes a random-weight model in the Hugging Face layout (see
//! `tokensieve_models::random_checkpoint`), for demos and benchmarks where no pretrained VLM can be downloaded.
//! Writing into a folder that already holds the model is a no-op, so scripts can call it every time.

use super::{emit, CliError};
use std::path::PathBuf;
use tokensieve::models::random_checkpoint::{
    write_onevision, write_qwen2_5_vl, write_qwen3_vl, OneVisionShape, Qwen3VlShape, QwenVlShape,
};
use tokensieve::models::safetensors::StoreAs;

/// Arguments of `init-model`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `demo` (LLaVA-OneVision geometry, narrow layers, ~12 M parameters, f32), `onevision-0.5b` (SigLIP-so400m +
    /// Qwen2-0.5B shapes, ~0.9 B parameters, bf16, about 1.8 GB), `qwen2.5-vl-demo` (Qwen2.5-VL geometry, narrow
    /// layers, f32), `qwen2.5-vl-3b` (Qwen2.5-VL-3B shapes, ~3.8 B parameters, bf16, about 7.5 GB) or
    /// `qwen3-vl-demo` (Qwen3-VL geometry with DeepStack, narrow layers, f32) or `qwen3-vl-4b` (Qwen3-VL-4B shapes,
    /// ~4.4 B parameters, bf16, about 8.9 GB).
    #[arg(long, default_value = "demo",
          value_parser = ["demo", "onevision-0.5b", "qwen2.5-vl-demo", "qwen2.5-vl-3b", "qwen3-vl-demo", "qwen3-vl-4b"])]
    preset: String,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rewrite a model already there.
    #[arg(long)]
    force: bool,
}

/// Runs `init-model`.
pub fn run(args: Args) -> Result<(), CliError> {
    let complete = ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"]
        .iter()
        .all(|f| args.out.join(f).is_file());
    if complete && !args.force {
        return emit(&format!("{}: already there (--force rewrites it)\n", args.out.display()));
    }
    // Written next to the target and renamed, so an interrupted run never leaves a complete-looking model.
    let partial = args.out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let written = match args.preset.as_str() {
        "demo" => write_onevision(&partial, &OneVisionShape::demo(), args.seed, StoreAs::F32),
        "onevision-0.5b" => write_onevision(&partial, &OneVisionShape::onevision_0_5b(), args.seed, StoreAs::Bf16),
        "qwen2.5-vl-demo" => write_qwen2_5_vl(&partial, &QwenVlShape::demo(), args.seed, StoreAs::F32),
        "qwen3-vl-demo" => write_qwen3_vl(&partial, &Qwen3VlShape::demo(), args.seed, StoreAs::F32),
        "qwen3-vl-4b" => write_qwen3_vl(&partial, &Qwen3VlShape::qwen3_vl_4b(), args.seed, StoreAs::Bf16),
        _ => write_qwen2_5_vl(&partial, &QwenVlShape::qwen2_5_vl_3b(), args.seed, StoreAs::Bf16),
    };
    written.map_err(|e| CliError::runtime(e.to_string(), None))?;
    let _ = std::fs::remove_dir_all(&args.out);
    std::fs::rename(&partial, &args.out)
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.out.display()), None))?;
    emit(&format!(
        "{}: {} with RANDOM weights ({} preset, seed {}): token counts, FLOPs and timings are real, answers are \
         meaningless\n",
        args.out.display(),
        match args.preset.as_str() {
            p if p.starts_with("qwen3") => "qwen3_vl",
            p if p.starts_with("qwen") => "qwen2_5_vl",
            _ => "llava_onevision",
        },
        args.preset,
        args.seed
    ))
}
