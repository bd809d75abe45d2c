//! `tokensieve init-model`: writes a random-weight model in the Hugging Face layout (see
//! `tokensieve_models::random_checkpoint`), for demos and benchmarks where no pretrained VLM can be downloaded.
//! Writing into a folder that already holds the model is a no-op, so scripts can call it every time.

use super::{emit, CliError};
use std::path::PathBuf;
use tokensieve::models::random_checkpoint::{write_onevision, OneVisionShape};
use tokensieve::models::safetensors::StoreAs;

/// Arguments of `init-model`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `demo` (LLaVA-OneVision geometry, narrow layers, ~12 M parameters, f32) or `onevision-0.5b` (SigLIP-so400m +
    /// Qwen2-0.5B shapes, ~0.9 B parameters, bf16, about 1.8 GB).
    #[arg(long, default_value = "demo", value_parser = ["demo", "onevision-0.5b"])]
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
    let (shape, dtype) = match args.preset.as_str() {
        "demo" => (OneVisionShape::demo(), StoreAs::F32),
        _ => (OneVisionShape::onevision_0_5b(), StoreAs::Bf16),
    };
    // Written next to the target and renamed, so an interrupted run never leaves a complete-looking model.
    let partial = args.out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    write_onevision(&partial, &shape, args.seed, dtype).map_err(|e| CliError::runtime(e.to_string(), None))?;
    let _ = std::fs::remove_dir_all(&args.out);
    std::fs::rename(&partial, &args.out)
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.out.display()), None))?;
    emit(&format!(
        "{}: llava_onevision with RANDOM weights ({} preset, seed {}): token counts, FLOPs and timings are real, \
         answers are meaningless\n",
        args.out.display(),
        args.preset,
        args.seed
    ))
}
