//! `tokensieve compress`: everything up to the decoder — frames, vision tower, projector, pruner — and a picture of
//! what was kept (kept patches at full brightness, dropped ones dimmed, one tile per frame), plus the record as
//! JSON. People look at this to trust a pruner.

use super::{emit, CliError};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tokensieve::models::llava::Llava;
use tokensieve::pruners::{prune, Budget, Layout, Method, Pruner, TchBackend, TokenSet};
use tokensieve::video::preprocess::ImageProcessor;
use tokensieve::video::Frame;

/// Arguments of `compress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `llava`/`llava_onevision` directory or a Hugging Face id (vision tower + projector are used).
    #[arg(long, value_parser = super::model_arg)]
    model: PathBuf,
    /// A video to sample.
    #[arg(long, conflicts_with = "image")]
    video: Option<PathBuf>,
    /// Images (each is one frame).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Frames to sample from the video (lmms-eval uniform).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// The pruner, `name:key=value,...` (see `tokensieve prune --list`).
    #[arg(long, default_value = "todre")]
    pruner: String,
    /// Keep this many visual tokens (all frames together).
    #[arg(long, conflicts_with = "ratio")]
    keep: Option<usize>,
    /// Keep this fraction of the visual tokens.
    #[arg(long)]
    ratio: Option<f64>,
    /// Folder for `kept.png` and `record.json`.
    #[arg(long)]
    out: PathBuf,
    /// Tensor backend: `torch` (libtorch; CUDA when available). `onnx` is refused until the ONNX Runtime backend exists.
    #[arg(long, default_value = "torch", value_parser = ["torch", "onnx"])]
    backend: String,
    /// Print the record as JSON.
    #[arg(long)]
    json: bool,
}

fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError::runtime(e.to_string(), None)
}

/// One tile per frame (4 per row), each scaled up to at least 224 pixels, dropped patches at 30 % brightness and
/// patch borders drawn faintly so the grid is visible.
fn picture(frames: &[Frame], grid: usize, kept: &[bool]) -> image::RgbImage {
    let side = frames.first().map_or(1, |f| f.width as usize);
    let scale = 224usize.div_ceil(side).max(1);
    let tile = side * scale;
    let per_row = 4.min(frames.len()).max(1);
    let rows = frames.len().div_ceil(per_row);
    let mut sheet =
        image::RgbImage::from_pixel((per_row * tile) as u32, (rows * tile) as u32, image::Rgb([20, 20, 20]));
    let cell = tile as f64 / grid as f64;
    for (f, frame) in frames.iter().enumerate() {
        let (ox, oy) = ((f % per_row) * tile, (f / per_row) * tile);
        for y in 0..tile {
            for x in 0..tile {
                let (gy, gx) = (((y as f64) / cell) as usize, ((x as f64) / cell) as usize);
                let token = f * grid * grid + gy.min(grid - 1) * grid + gx.min(grid - 1);
                let src = ((y / scale) * side + x / scale) * 3;
                let border = (y as f64 % cell) < 1.0 || (x as f64 % cell) < 1.0;
                let factor = if kept[token] { 1.0 } else { 0.3 };
                let px = [0, 1, 2].map(|c| {
                    let v = frame.rgb[src + c] as f64 * factor;
                    (if border { v * 0.8 } else { v }) as u8
                });
                sheet.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
        }
    }
    sheet
}

/// The processed (resized, cropped) frame back in 8-bit colour, i.e. exactly what the tower saw.
fn denormalise(processor: &ImageProcessor, p: &tokensieve::video::preprocess::Pixels) -> Frame {
    let plane = p.height * p.width;
    let (mean, std) = processor.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
    let scale = processor.rescale.unwrap_or(1.0);
    let mut rgb = vec![0u8; plane * 3];
    for c in 0..3 {
        for i in 0..plane {
            let v = (p.data[c * plane + i] as f64 * std[c] + mean[c]) / scale;
            rgb[i * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Frame { timestamp: 0.0, requested: 0.0, width: p.width as u32, height: p.height as u32, rgb }
}

pub fn run(args: Args) -> Result<(), CliError> {
    super::check_backend(&args.backend)?;
    let (method, params) =
        Method::from_spec(&args.pruner).map_err(|e| CliError::usage(e.to_string(), "see `tokensieve prune --list`"))?;
    let budget = match (args.keep, args.ratio) {
        (Some(k), _) => Budget::Keep(k),
        (None, Some(r)) => Budget::Ratio(r),
        _ => return Err(CliError::usage("give --keep K or --ratio R", "for example --ratio 0.1")),
    };
    budget.validate().map_err(|e| CliError::usage(e.to_string(), "a kept fraction lies in (0, 1]"))?;
    let device = tch::Device::cuda_if_available();
    let mut times = serde_json::Map::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, times: &mut serde_json::Map<String, serde_json::Value>| {
        times.insert(name.into(), json!(clock.elapsed().as_secs_f64() * 1e3));
        clock = Instant::now();
    };
    let model = Llava::load(&args.model, device).map_err(runtime)?;
    let config: serde_json::Value = std::fs::read_to_string(args.model.join("preprocessor_config.json"))
        .map_err(|e| runtime(format!("{}: {e}", args.model.join("preprocessor_config.json").display())))
        .and_then(|t| serde_json::from_str(&t).map_err(runtime))?;
    let processor = ImageProcessor::from_config(&config).map_err(runtime)?;
    let side = model.vision.config.image_size as u32;
    lap("load", &mut times);
    // Frames at their own resolution: the image processor resizes and crops exactly as transformers does.
    let frames = super::frames_from(args.video.as_deref(), &args.image, args.frames)?;
    lap("decode", &mut times);
    let mut pixels = Vec::new();
    let mut shown = Vec::new();
    for f in &frames {
        let p = processor.preprocess(&f.rgb, f.width as usize, f.height as usize);
        if (p.width, p.height) != (side as usize, side as usize) {
            return Err(runtime(format!(
                "the image processor gives {}x{}, the tower takes {side}x{side}",
                p.width, p.height
            )));
        }
        shown.push(denormalise(&processor, &p));
        pixels.extend(p.data);
    }
    let batch =
        tch::Tensor::from_slice(&pixels).reshape([frames.len() as i64, 3, side as i64, side as i64]).to_device(device);
    lap("preprocess", &mut times);
    // LLaVA-OneVision pools a video's frames 2x2 before the LLM, so the pruners (and the picture) see pooled cells;
    // a single image would go through any-resolution tiling, which this grid picture cannot show.
    let onevision = model.onevision.is_some();
    if onevision && args.video.is_none() && frames.len() == 1 {
        return Err(CliError::usage(
            "one image on llava_onevision is pruned as a flat any-resolution sequence, which has no grid to draw",
            "give a --video or two or more --image files",
        ));
    }
    let (visual, out) = if onevision && args.video.is_some() {
        model.video_features(&batch).map_err(runtime)?
    } else {
        model.image_features(&batch).map_err(runtime)?
    };
    lap("encode", &mut times);
    let (f, n, d) = visual.size3().map_err(runtime)?;
    let grid = (n as f64).sqrt() as usize;
    if grid * grid != n as usize {
        return Err(runtime(format!("{n} visual tokens per frame are not a square grid")));
    }
    let backend = TchBackend::new(device);
    let features = visual.reshape([f * n, d]);
    let mut tokens = TokenSet::new(&backend, features)
        .map_err(runtime)?
        .with_layout(Layout::frames(f as usize, grid, grid))
        .map_err(runtime)?;
    if let Some(a) = &out.cls_attention {
        let a: Vec<f32> = Vec::try_from(a.reshape([-1])).map_err(|e: tch::TchError| runtime(e))?;
        tokens = tokens.with_cls_attention(a).map_err(runtime)?;
    }
    let selection = prune(&backend, &method, &tokens, budget)
        .map_err(|e| CliError::usage(e.to_string(), "check the pruner's needs and the budget"))?;
    lap("prune", &mut times);
    let mut kept = vec![false; (f * n) as usize];
    selection.kept.iter().for_each(|&i| kept[i] = true);
    std::fs::create_dir_all(&args.out).map_err(|e| runtime(format!("{}: {e}", args.out.display())))?;
    let png = args.out.join("kept.png");
    picture(&shown, grid, &kept).save(&png).map_err(|e| runtime(format!("{}: {e}", png.display())))?;
    let per_frame: Vec<usize> =
        (0..f as usize).map(|i| kept[i * n as usize..(i + 1) * n as usize].iter().filter(|k| **k).count()).collect();
    let record = json!({
        "model": args.model, "pruner": method.name(), "params": params.effective(),
        "frames": frames.iter().map(|fr| json!({"timestamp": fr.timestamp})).collect::<Vec<_>>(),
        "visual_tokens": {"before": f * n, "after": selection.kept.len(), "per_frame": per_frame},
        "kept": selection.kept, "notes": selection.notes, "stage_ms": times, "picture": png,
    });
    let path = args.out.join("record.json");
    std::fs::write(&path, serde_json::to_string_pretty(&record).unwrap_or_default())
        .map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    if args.json {
        emit(&format!("{record}\n"))
    } else {
        emit(&format!(
            "{}: kept {} of {} visual tokens over {} frames; picture {}, record {}\n",
            method.name(),
            selection.kept.len(),
            f * n,
            f,
            png.display(),
            path.display()
        ))
    }
}
