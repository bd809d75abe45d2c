//! `tokensieve compress`: everything up to the decoder — frames, vision tower, projector, pruner — and a picture of
//! what was kept (kept patches at full brightness, dropped ones dimmed, one tile per frame), plus the record as
//! JSON. People look at this to trust a pruner.
//!
//! With a question (`tokensieve compress ... "what is on the left?"`), query-aware methods (`query`, `cdpruner`)
//! read it as `ask` hands it over (`--relevance llm`: its LLM input embeddings; `clip:MODEL` / `siglip:MODEL`: a
//! dual encoder's text embeddings against its patch embeddings of the pixels the model saw), and the picture puts a
//! relevance heat map beside each kept-patch panel: each token's mean cosine to the question's rows, in that
//! space, min-max scaled over the whole input (blue = least, red = most relevant). The record names the query's
//! source, or says the method is query-agnostic. An encoder `.onnx` has no language model, so it takes no question.

use super::{emit, CliError};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tokensieve::pipeline::engine::Engine;
use tokensieve::pipeline::qa::{MediaKind, VisualTokens};
use tokensieve::pruners::methods::query::question_relevance;
use tokensieve::pruners::{prune, Budget, CpuBackend, Method, Pruner, Signal, TokenSet};
use tokensieve::video::preprocess::ImageProcessor;
use tokensieve::video::Frame;

/// Arguments of `compress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `llava`/`llava_onevision`/`qwen2_5_vl`/`qwen3_vl` directory, a Hugging Face id, or with `--backend onnx` an
    /// export folder or your own vision encoder `.onnx` (pixels -> patch tokens; give its `--processor`). The vision
    /// side is used.
    #[arg(long, value_parser = super::model_arg)]
    model: PathBuf,
    /// The image processor settings (`preprocessor_config.json`) of an encoder `.onnx` given as --model.
    #[arg(long)]
    processor: Option<PathBuf>,
    /// A video to sample.
    #[arg(long, conflicts_with = "image")]
    video: Option<PathBuf>,
    /// Images (each is one frame).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Frame sampler `name:key=value,...` (uniform, uniform-interior, fps, dcode, or `f2c:...` with the question and
    /// `--relevance clip:MODEL`).
    #[arg(long, default_value = "uniform")]
    sampler: String,
    /// Frames to sample (for samplers with a `frames` parameter that the spec does not set; lmms-eval uniform).
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
    #[command(flatten)]
    backend: super::BackendFlags,
    /// Print the record as JSON.
    #[arg(long)]
    json: bool,
    /// Where query-aware pruners and the heat map get relevance: `llm` (the question's LLM input embeddings against
    /// the visual tokens, the default) or a dual encoder `clip:MODEL` / `siglip:MODEL` (its text embeddings against
    /// its patch embeddings of the pixels the model saw), as in `ask`.
    #[arg(long, default_value = "llm")]
    relevance: String,
    /// The question: query-aware pruners read it, and the picture adds a relevance heat map.
    question: Option<String>,
}

fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError::runtime(e.to_string(), None)
}

/// One picture of the sheet: an image the tower saw, its token cells and which were kept, or a heat map.
struct Panel {
    image: Frame,
    /// Token cells `(rows, cols)` over the image.
    cells: (usize, usize),
    /// Kept flag per cell, row-major.
    kept: Vec<bool>,
    /// Relevance in `[0, 1]` per cell, row-major: the panel is then a heat map over the image.
    heat: Option<Vec<f32>>,
}

/// The panels of a selection: one per frame of a `grid x grid` patch grid, or for a single any-resolution image the
/// base view and the unpadded tile canvas with the packed map's cells (its newline tokens have no place).
fn panels(views: Vec<Frame>, visual: &VisualTokens, kept: &[bool]) -> Result<Vec<Panel>, CliError> {
    if let Some(a) = &visual.anyres {
        let g = a.base;
        let mut views = views.into_iter();
        let base = views.next().ok_or_else(|| runtime("no base view"))?;
        let tiles: Vec<Frame> = views.collect();
        let (rows, cols) = a.cut.grid;
        let side = base.width as usize;
        let patch = side / g.max(1);
        let (top, left, h, w) = (a.map.top * patch, a.map.left * patch, a.map.height * patch, a.map.width * patch);
        let mut rgb = Vec::with_capacity(h * w * 3);
        for y in top..top + h {
            for x in left..left + w {
                let tile = &tiles[(y / side) * cols + x / side];
                let at = ((y % side) * side + x % side) * 3;
                rgb.extend_from_slice(&tile.rgb[at..at + 3]);
            }
        }
        if tiles.len() != rows * cols {
            return Err(runtime(format!("{} tiles for a {rows}x{cols} grid", tiles.len())));
        }
        let canvas = Frame { timestamp: 0.0, requested: 0.0, width: w as u32, height: h as u32, rgb };
        let map_kept: Vec<bool> = (0..a.map.rows)
            .flat_map(|y| (0..a.map.cols).map(move |x| g * g + y * (a.map.cols + 1) + x))
            .map(|i| kept[i])
            .collect();
        return Ok(vec![
            Panel { image: base, cells: (g, g), kept: kept[..g * g].to_vec(), heat: None },
            Panel { image: canvas, cells: (a.map.rows, a.map.cols), kept: map_kept, heat: None },
        ]);
    }
    let Some(grids) = visual.unit_grids() else {
        return Err(CliError::usage(
            format!("{} visual tokens without a grid to draw", visual.features.nrows()),
            "give a --video, --image files or one any-resolution image to a llava_onevision model",
        ));
    };
    let starts = visual.unit_starts();
    // One panel per unit of tokens: a frame, an image (Qwen-VL's may differ in size), or (Qwen-VL) the first frame
    // of each temporal patch.
    let stride = views.len().div_ceil(visual.units.0.max(1)).max(1);
    views
        .into_iter()
        .step_by(stride)
        .zip(grids)
        .enumerate()
        .map(|(f, (image, cells))| {
            let flags = kept.get(starts[f]..starts[f + 1]).ok_or_else(|| {
                runtime(format!("{} kept flags for unit {f} of rows {}..{}", kept.len(), starts[f], starts[f + 1]))
            })?;
            Ok(Panel { image, cells, kept: flags.to_vec(), heat: None })
        })
        .collect()
}

/// Each token's relevance to the question ([`question_relevance`]: mean cosine to its LLM input embeddings),
/// min-max scaled to `[0, 1]` over all tokens (all `0.5` when equal), for the heat map.
fn relevance(features: &ndarray::Array2<f32>, query: &ndarray::Array2<f32>) -> Result<Vec<f32>, CliError> {
    let mean = question_relevance(&CpuBackend, features, query).map_err(runtime)?;
    let (lo, hi) = mean.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    Ok(mean.iter().map(|&v| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 }).collect())
}

/// The heat map's colour of relevance `r` in `[0, 1]`: blue through white to red.
fn heat_colour(r: f32) -> [f64; 3] {
    let r = r.clamp(0.0, 1.0) as f64;
    if r < 0.5 {
        let t = r * 2.0;
        [255.0 * t, 255.0 * t, 255.0]
    } else {
        let t = (1.0 - r) * 2.0;
        [255.0, 255.0 * t, 255.0 * t]
    }
}

/// The panels side by side (4 per row), each scaled up to at least 224 pixels, dropped cells at 30 % brightness
/// and cell borders drawn faintly so the grid is visible.
fn picture(panels: &[Panel]) -> image::RgbImage {
    let largest = panels.iter().map(|p| p.image.width.max(p.image.height) as usize).max().unwrap_or(1);
    let scale = 224usize.div_ceil(largest).max(1);
    let tile = largest * scale;
    let per_row = 4.min(panels.len()).max(1);
    let rows = panels.len().div_ceil(per_row);
    let mut sheet =
        image::RgbImage::from_pixel((per_row * tile) as u32, (rows * tile) as u32, image::Rgb([20, 20, 20]));
    for (f, panel) in panels.iter().enumerate() {
        let (ox, oy) = ((f % per_row) * tile, (f / per_row) * tile);
        let (w, h) = (panel.image.width as usize, panel.image.height as usize);
        // Each panel fills the sheet's square as far as a whole-number scale allows.
        let scale = (tile / w.max(h).max(1)).max(1);
        let (cell_h, cell_w) = ((h * scale) as f64 / panel.cells.0 as f64, (w * scale) as f64 / panel.cells.1 as f64);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let (gy, gx) = ((y as f64 / cell_h) as usize, (x as f64 / cell_w) as usize);
                let cell = gy.min(panel.cells.0 - 1) * panel.cells.1 + gx.min(panel.cells.1 - 1);
                let src = ((y / scale) * w + x / scale) * 3;
                let border = (y as f64 % cell_h) < 1.0 || (x as f64 % cell_w) < 1.0;
                let factor = if panel.kept[cell] { 1.0 } else { 0.3 };
                let px = [0, 1, 2].map(|c| {
                    let v = match &panel.heat {
                        // The image in grey under the heat colour, so the relevant objects stay recognisable.
                        Some(heat) => {
                            let rgb = &panel.image.rgb[src..src + 3];
                            let grey = 0.299 * rgb[0] as f64 + 0.587 * rgb[1] as f64 + 0.114 * rgb[2] as f64;
                            0.35 * grey + 0.65 * heat_colour(heat[cell])[c]
                        }
                        None => panel.image.rgb[src + c] as f64 * factor,
                    };
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

/// Where the visual tokens come from.
enum Encoder {
    /// A model's vision tower and projector, on either backend.
    Model(Box<Engine>),
    /// The user's own encoder graph.
    #[cfg(feature = "onnx")]
    Custom(Box<tokensieve::pipeline::custom_encoder::CustomEncoder>),
}

/// `--model encoder.onnx --processor preprocessor_config.json` on the onnx backend.
fn custom_encoder(args: &Args, choice: &tokensieve::pipeline::engine::EngineChoice) -> Result<Encoder, CliError> {
    let Some(processor) = &args.processor else {
        return Err(CliError::usage(
            format!("{}: an encoder .onnx needs --processor", args.model.display()),
            "give the preprocessor_config.json of your encoder",
        ));
    };
    match choice {
        #[cfg(feature = "onnx")]
        tokensieve::pipeline::engine::EngineChoice::Onnx { options, .. } => Ok(Encoder::Custom(Box::new(
            tokensieve::pipeline::custom_encoder::CustomEncoder::load(&args.model, processor, options)
                .map_err(runtime)?,
        ))),
        #[cfg(feature = "torch")]
        tokensieve::pipeline::engine::EngineChoice::Torch { .. } => Err(CliError::usage(
            format!("{}: an .onnx encoder runs on the onnx backend", args.model.display()),
            "add --backend onnx",
        )),
    }
}

pub fn run(args: Args) -> Result<(), CliError> {
    let choice = args.backend.choice(None)?;
    let (method, params) =
        Method::from_spec(&args.pruner).map_err(|e| CliError::usage(e.to_string(), "see `tokensieve prune --list`"))?;
    let budget = match (args.keep, args.ratio) {
        (Some(k), _) => Budget::Keep(k),
        (None, Some(r)) => Budget::Ratio(r),
        _ => return Err(CliError::usage("give --keep K or --ratio R", "for example --ratio 0.1")),
    };
    budget.validate().map_err(|e| CliError::usage(e.to_string(), "a kept fraction lies in (0, 1]"))?;
    let mut times = serde_json::Map::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, times: &mut serde_json::Map<String, serde_json::Value>| {
        times.insert(name.into(), json!(clock.elapsed().as_secs_f64() * 1e3));
        clock = Instant::now();
    };
    let encoder = if args.model.extension().is_some_and(|e| e == "onnx") {
        custom_encoder(&args, &choice)?
    } else {
        if args.processor.is_some() {
            return Err(CliError::usage(
                "--processor goes with an encoder .onnx file as --model",
                "a model folder has its own preprocessor_config.json",
            ));
        }
        args.backend.check_model(&args.model)?;
        Encoder::Model(Box::new(args.backend.load(&args.model, choice).map_err(runtime)?))
    };
    lap("load", &mut times);
    if args.relevance != "llm" && args.question.is_none() {
        return Err(CliError::usage(
            format!("--relevance {} scores the question, and none was given", args.relevance),
            "give the question last: tokensieve compress ... \"what is on the left?\"",
        ));
    }
    let provider = super::ask::relevance_provider(&args.relevance, None)?;
    // Frames at their own resolution: the image processor resizes and crops exactly as transformers does. F2C ranks
    // them by the question with the dual encoder, D-CoDe embeds them with it.
    let ranking = match &encoder {
        Encoder::Model(engine) => {
            Some(super::Ranking { engine, provider: provider.as_deref(), query: args.question.as_deref() })
        }
        #[cfg(feature = "onnx")]
        Encoder::Custom(_) => None,
    };
    let frames = super::frames_from(args.video.as_deref(), &args.image, &args.sampler, args.frames, ranking)?;
    lap("decode", &mut times);
    // OneVision pools a video's frames 2x2 before the LLM, so the pruners (and the picture) see pooled cells; a
    // single image goes through any-resolution tiling: the picture shows its base view and its packed tile map.
    let kind = if args.video.is_some() { MediaKind::Video } else { MediaKind::Images };
    let (visual, query) = match (&encoder, &args.question) {
        (Encoder::Model(engine), Some(q)) => {
            engine.visual_tokens_for(&frames, kind, q, std::slice::from_ref(&method), provider.as_deref())
        }
        (Encoder::Model(engine), None) => engine.visual_tokens(&frames, kind).map(|v| (v, None)),
        #[cfg(feature = "onnx")]
        (Encoder::Custom(_), Some(_)) => {
            return Err(CliError::usage(
                "an encoder .onnx has no language model to embed the question",
                "drop the question, or give a llava/llava_onevision model",
            ))
        }
        #[cfg(feature = "onnx")]
        (Encoder::Custom(custom), None) => custom.visual_tokens(&frames).map(|v| (v, None)),
    }
    .map_err(runtime)?;
    lap("encode", &mut times);
    let (f, total, starts) = (visual.units.0, visual.features.nrows(), visual.unit_starts());
    // The pruner runs on the host for both backends, so the picture shows one selection whatever ran the tower.
    let mut tokens = TokenSet::new(&CpuBackend, visual.features.clone()).map_err(runtime)?;
    if let Some(layout) = visual.layout {
        tokens = tokens.with_layout(layout).map_err(runtime)?;
    }
    if let Some(a) = visual.attention.clone() {
        tokens = tokens.with_cls_attention(a).map_err(runtime)?;
    }
    if let Some(k) = visual.keys.clone() {
        tokens = tokens.with_keys(&CpuBackend, k).map_err(runtime)?;
    }
    // As in the pipeline: query-reading methods get the query, relevance-reading ones (MMR's
    // `importance=relevance`) the question's relevance.
    let reads_query = method.uses().contains(&Signal::Query);
    let reads_relevance = method.reads_relevance();
    // The tokens' relevance to the question: in the dual encoder's space when there is one (the heat map's too).
    let heat = match &query {
        Some(q) => Some(relevance(q.space.as_ref().unwrap_or(&visual.features), &q.rows)?),
        None => None,
    };
    if let Some(space) = query.as_ref().and_then(|q| q.space.clone()).filter(|_| reads_query) {
        tokens = tokens.with_query_space(&CpuBackend, space).map_err(runtime)?;
    }
    if let (Some(q), true) = (&query, reads_query) {
        tokens = tokens.with_query(&CpuBackend, q.rows.clone()).map_err(runtime)?;
    } else if let (Some(q), true) = (&query, reads_relevance) {
        let against = q.space.as_ref().unwrap_or(tokens.features());
        let r = question_relevance(&CpuBackend, against, &q.rows).map_err(runtime)?;
        tokens = tokens.with_relevance(r).map_err(runtime)?;
    }
    let query_source = match (&query, reads_query || reads_relevance) {
        (Some(q), true) => format!("{} ({} rows)", q.source, q.rows.nrows()),
        (Some(_), false) => format!("none: {} is query-agnostic (the heat map still shows relevance)", method.name()),
        (None, true) => "none: no question given".to_string(),
        (None, false) => format!("none: {} is query-agnostic", method.name()),
    };
    let hint = if (reads_query || reads_relevance) && query.is_none() {
        "give the question last: tokensieve compress ... \"what is on the left?\""
    } else {
        "check the pruner's needs and the budget"
    };
    let selection = prune(&CpuBackend, &method, &tokens, budget).map_err(|e| CliError::usage(e.to_string(), hint))?;
    lap("prune", &mut times);
    // The picture shows what the tower saw; preprocessing again here (milliseconds per frame) keeps pixel buffers
    // out of the engines' interface.
    let processor = match &encoder {
        Encoder::Model(engine) => engine.processor(),
        #[cfg(feature = "onnx")]
        Encoder::Custom(custom) => custom.processor(),
    };
    let views = match &encoder {
        Encoder::Model(engine) => engine.views(&frames, kind).map_err(runtime)?.0,
        #[cfg(feature = "onnx")]
        Encoder::Custom(_) => {
            frames.iter().map(|fr| processor.preprocess(&fr.rgb, fr.width as usize, fr.height as usize)).collect()
        }
    };
    let shown: Vec<Frame> = views.iter().map(|p| denormalise(processor, p)).collect();
    let mut kept = vec![false; total];
    selection.kept.iter().for_each(|&i| kept[i] = true);
    let mut sheet_panels = panels(shown, &visual, &kept)?;
    if let Some(heat) = heat {
        // A heat panel after each kept-patch panel, over the same image and cells.
        // Each panel's cells are its unit's rows (units may differ in size: Qwen-VL images).
        if visual.anyres.is_none() && sheet_panels.len() + 1 == starts.len() && starts.last() == Some(&heat.len()) {
            sheet_panels = sheet_panels
                .into_iter()
                .enumerate()
                .flat_map(|(f, p)| {
                    let hot = Panel {
                        image: p.image.clone(),
                        cells: p.cells,
                        kept: p.kept.clone(),
                        heat: Some(heat[starts[f]..starts[f + 1]].to_vec()),
                    };
                    [p, hot]
                })
                .collect();
        }
    }
    let sheet = picture(&sheet_panels);
    std::fs::create_dir_all(&args.out).map_err(|e| runtime(format!("{}: {e}", args.out.display())))?;
    let png = args.out.join("kept.png");
    sheet.save(&png).map_err(|e| runtime(format!("{}: {e}", png.display())))?;
    let per_frame: Vec<usize> = starts.windows(2).map(|w| kept[w[0]..w[1]].iter().filter(|k| **k).count()).collect();
    let record = json!({
        "model": args.model, "backend": args.backend.backend, "pruner": method.name(), "params": params.effective(),
        "frames": frames.iter().map(|fr| json!({"timestamp": fr.timestamp})).collect::<Vec<_>>(),
        "visual_tokens": {"before": total, "after": selection.kept.len(), "per_frame": per_frame},
        "kept": selection.kept, "notes": selection.notes, "stage_ms": times, "picture": png,
        "question": args.question, "query": query_source,
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
            total,
            f,
            png.display(),
            path.display()
        ))
    }
}
