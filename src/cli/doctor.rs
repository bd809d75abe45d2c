//! `tokensieve doctor`: what this build can use — libtorch and CUDA, ONNX Runtime, FFmpeg, the asset cache.
//! Exits 0 when the default backends (ONNX Runtime, FFmpeg) and every compiled-in backend work.

use super::{emit, CliError};
use serde_json::json;
use tokensieve::assets;
use tokensieve::models::runtime;

/// Arguments of `doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

fn features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "torch") {
        f.push("torch");
    }
    if cfg!(feature = "onnx") {
        f.push("onnx");
    }
    if cfg!(feature = "video") {
        f.push("video");
    }
    f
}

#[cfg(feature = "video")]
fn ffmpeg() -> Result<tokensieve::video::FfmpegInfo, String> {
    tokensieve::video::ffmpeg_info().map_err(|e| e.to_string())
}

#[cfg(not(feature = "video"))]
fn ffmpeg() -> Result<(), String> {
    Err("the `video` feature is not compiled in".into())
}

pub fn run(args: Args) -> Result<(), CliError> {
    let torch = runtime::torch();
    let onnx = runtime::onnx();
    let ff = ffmpeg();
    let asset_dir = assets::dir();
    let status = assets::check(&asset_dir);
    let torch_ok = torch.is_ok() || !cfg!(feature = "torch");
    let healthy = onnx.is_ok() && ff.is_ok() && torch_ok;
    if args.json {
        let report = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "features": features(),
            "libtorch": torch.as_ref().map(|t| json!(t)).unwrap_or_else(|e| json!({"error": e.to_string()})),
            "onnxruntime": onnx.as_ref().map(|o| json!(o)).unwrap_or_else(|e| json!({"error": e.to_string()})),
            "ffmpeg": match &ff {
                #[cfg(feature = "video")]
                Ok(i) => json!({"version": i.version, "libavcodec": i.avcodec, "libavformat": i.avformat}),
                #[cfg(not(feature = "video"))]
                Ok(_) => json!(null),
                Err(e) => json!({"error": e}),
            },
            "assets": {"dir": asset_dir, "files": status},
            "healthy": healthy,
        });
        emit(&format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default()))?;
    } else {
        let mut text = String::new();
        macro_rules! say { ($($t:tt)*) => {{ text += &format!($($t)*); text.push('\n'); }} }
        say!("tokensieve {} (features: {})", env!("CARGO_PKG_VERSION"), features().join(", "));
        match &torch {
            Ok(t) => {
                let device = if t.cuda_available {
                    format!(
                        "CUDA, {} device(s), cuDNN {}",
                        t.cuda_devices,
                        if t.cudnn_available { "yes" } else { "no" }
                    )
                } else {
                    "CPU (no CUDA device)".to_string()
                };
                say!("libtorch      {} [{}] at {}", t.version, device, t.library_dir);
            }
            Err(e) => say!("libtorch      unavailable: {e}"),
        }
        match &onnx {
            Ok(o) => say!("onnxruntime   {} at {}", o.version, o.library.display()),
            Err(e) => say!("onnxruntime   unavailable: {e}"),
        }
        match &ff {
            #[cfg(feature = "video")]
            Ok(i) => say!("ffmpeg        {} (libavcodec {}, libavformat {})", i.version, i.avcodec, i.avformat),
            #[cfg(not(feature = "video"))]
            Ok(_) => {}
            Err(e) => say!("ffmpeg        unavailable: {e}"),
        }
        let present = status.iter().filter(|s| s.ok).count();
        say!("assets        {} ({present} of {} present)", asset_dir.display(), status.len());
        for s in &status {
            let state = match (s.ok, s.found_bytes) {
                (true, Some(b)) => format!("ok       {:>11} B", b),
                (false, Some(b)) => format!("BAD SIZE {:>11} B (expected {})", b, s.asset.bytes.unwrap_or(0)),
                _ => "MISSING".to_string(),
            };
            say!("  {state}  {}  ({})", s.asset.name, s.asset.package);
        }
        emit(&text)?;
    }
    if healthy {
        Ok(())
    } else {
        Err(CliError::runtime(
            "a default backend is unavailable (see the report above)",
            Some("run `make setup`, then `source ~/.cache/tokensieve/env.sh` (or use the Makefile targets)".into()),
        ))
    }
}
