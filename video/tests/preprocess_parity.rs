//! Preprocessing against Hugging Face transformers (PIL backend) on real photos: fixtures from
//! `fixtures/make_preprocess_fixtures.py`. PNG inputs must match bit for bit; the JPEG input may differ by one 8-bit
//! level where the `image` crate's JPEG decoder and libjpeg round differently (decoding, not preprocessing).

use serde_json::Value;
use std::path::{Path, PathBuf};
use tokensieve_video::preprocess::{AnyRes, ImageProcessor, Pixels};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

fn photo(name: &str) -> (Vec<u8>, usize, usize) {
    let root = std::env::var_os("TOKENSIEVE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tokensieve/assets"));
    let path = root.join("images").join(name);
    let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e} (run `make setup`)", path.display())).to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w as usize, h as usize)
}

/// transformers' tensor rebuilt from the fixture picture: (u8 · (1/255) as f64 → f32 − mean) / std, channels first.
fn expected(case: &str, record: &Value) -> Vec<Vec<f32>> {
    let png = image::open(fixtures().join(format!("{case}.png"))).unwrap().to_rgb8();
    let shape: Vec<usize> = record["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let tiles = png.height() as usize / h;
    let mean: Vec<f32> = record["image_mean"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let std: Vec<f32> = record["image_std"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    (0..tiles)
        .map(|t| {
            let mut out = vec![0f32; 3 * h * w];
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        let v = png.get_pixel(x as u32, (t * h + y) as u32)[c];
                        out[c * h * w + y * w + x] = ((v as f64 * (1.0 / 255.0)) as f32 - mean[c]) / std[c];
                    }
                }
            }
            out
        })
        .collect()
}

fn processor(record: &Value) -> ImageProcessor {
    let config = serde_json::json!({
        "size": record["size"],
        "crop_size": record["crop_size"],
        "do_center_crop": !record["crop_size"].is_null(),
        "resample": record["resample"],
        "image_mean": record["image_mean"],
        "image_std": record["image_std"],
        "image_aspect_ratio": if record["pad_to_square"] == true { "pad" } else { "" },
    });
    ImageProcessor::from_config(&config).unwrap()
}

/// Largest difference in 8-bit levels between two normalised tensors of one channel layout.
fn max_levels(ours: &[f32], theirs: &[f32], std: &[f32], plane: usize) -> f32 {
    ours.iter().zip(theirs).enumerate().map(|(i, (a, b))| (a - b).abs() * std[i / plane] * 255.0).fold(0.0, f32::max)
}

fn check(case: &str, allowed_levels: f32) {
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{case}.json"))).unwrap()).unwrap();
    let (rgb, w, h) = photo(record["image"].as_str().unwrap());
    let p = processor(&record);
    let ours: Vec<Pixels> = match record.get("pinpoints") {
        Some(pins) => {
            let pinpoints = pins
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize))
                .collect();
            let tile = record["crop_size"]["height"].as_u64().unwrap() as usize;
            AnyRes { pinpoints, tile }.tiles(&p, &rgb, w, h).0
        }
        None => vec![p.preprocess(&rgb, w, h)],
    };
    let theirs = expected(case, &record);
    assert_eq!(ours.len(), theirs.len(), "{case}: tile count");
    let std: Vec<f32> = record["image_std"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let mut worst = 0f32;
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o.data.len(), t.len(), "{case}: tensor size");
        worst = worst.max(max_levels(&o.data, t, &std, o.height * o.width));
    }
    assert!(worst <= allowed_levels, "{case}: differs from transformers by {worst} levels (allowed {allowed_levels})");
    // The sampled values are transformers' own float32 output, position by position.
    let flat: Vec<f32> = ours.iter().flat_map(|p| p.data.iter().copied()).collect();
    for (pos, value) in record["positions"].as_array().unwrap().iter().zip(record["values"].as_array().unwrap()) {
        let (pos, value) = (pos.as_u64().unwrap() as usize, value.as_f64().unwrap() as f32);
        let levels = (flat[pos] - value).abs() * std[(pos / (ours[0].height * ours[0].width)) % 3] * 255.0;
        assert!(levels <= allowed_levels, "{case}: position {pos}: {} vs {value}", flat[pos]);
    }
}

#[test]
fn clip_shortest_edge_and_center_crop_match_exactly() {
    check("clip224_coffee", 0.0);
}

#[test]
fn bilinear_and_rectangular_crops_match_exactly() {
    check("clip_bilinear_astronaut", 0.0);
}

#[test]
fn llava_pad_to_square_matches_exactly() {
    check("llava_pad_chelsea", 0.0);
}

#[test]
fn anyres_tiles_match_exactly() {
    check("anyres_chelsea", 0.0);
}

#[test]
fn siglip_fixed_size_on_a_jpeg_is_within_one_level() {
    // One 8-bit level, plus float slack in converting the difference back to levels.
    check("siglip224_rocket", 1.001);
}

/// Qwen2-VL's processor: `smart_resize` to multiples of 28 inside the pixel bounds, bicubic, CLIP normalisation,
/// then patches in merge blocks; the resized image must match bit for bit and the patches value for value.
fn check_qwen(case: &str) {
    use tokensieve_video::preprocess::patches::patchify;
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{case}.json"))).unwrap()).unwrap();
    let (rgb, w, h) = photo(record["image"].as_str().unwrap());
    let config = serde_json::json!({
        "image_processor_type": "Qwen2VLImageProcessor",
        "min_pixels": record["min_pixels"],
        "max_pixels": record["max_pixels"],
        "patch_size": 14,
        "merge_size": 2,
        "image_mean": record["image_mean"],
        "image_std": record["image_std"],
    });
    let p = ImageProcessor::from_config(&config).unwrap();
    let ours = p.preprocess(&rgb, w, h);
    assert_eq!((ours.height, ours.width), p.output_size(h, w), "{case}: output_size agrees with preprocess");
    let theirs = expected(case, &record);
    assert_eq!(ours.data.len(), theirs[0].len(), "{case}: resized size");
    assert!(ours.data == theirs[0], "{case}: the resized image differs from transformers'");
    let (patches, grid) = patchify(&[&ours], 14, 2, 2, true).unwrap();
    check_patches(case, &record, &patches, grid);
}

/// The patch grid and the sampled patch values of a Qwen fixture equal ours exactly.
fn check_patches(case: &str, record: &Value, patches: &[f32], grid: [usize; 3]) {
    let want: Vec<usize> = record["grid"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(grid.to_vec(), want, "{case}: patch grid");
    for (pos, value) in record["positions"].as_array().unwrap().iter().zip(record["values"].as_array().unwrap()) {
        let (pos, value) = (pos.as_u64().unwrap() as usize, value.as_f64().unwrap() as f32);
        assert_eq!(patches[pos], value, "{case}: patch value {pos}");
    }
}

#[test]
fn qwen_native_resolution_shrinks_under_max_pixels_exactly() {
    check_qwen("qwen_down_coffee");
}

#[test]
fn qwen_native_resolution_grows_over_min_pixels_exactly() {
    check_qwen("qwen_up_chelsea");
}

/// A Qwen-VL video processor (transformers' torchvision backend: libtorch's uint8 anti-aliased bicubic resize, then
/// the fused `(x − mean·255) / (std·255)`) on a two-frame video of a photo and its mirror image: the resized frames
/// must match bit for bit and the patches value for value.
fn check_qwen_video(case: &str) {
    use tokensieve_video::preprocess::patches::patchify;
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{case}.json"))).unwrap()).unwrap();
    let (rgb, w, h) = photo(record["image"].as_str().unwrap());
    let image = image::RgbImage::from_raw(w as u32, h as u32, rgb).unwrap();
    let image = match record["crop"].as_array() {
        Some(c) => {
            let c: Vec<u32> = c.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            image::imageops::crop_imm(&image, c[0], c[1], c[2] - c[0], c[3] - c[1]).to_image()
        }
        None => image,
    };
    let flipped = image::imageops::flip_horizontal(&image);
    let (w, h) = (image.width() as usize, image.height() as usize);
    let patch = record["patch_size"].as_u64().unwrap();
    let config = serde_json::json!({
        "video_processor_type": record["processor"],
        "min_pixels": record["min_pixels"],
        "max_pixels": record["max_pixels"],
        "patch_size": patch,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "resample": 3,
        "image_mean": record["image_mean"],
        "image_std": record["image_std"],
    });
    let p = ImageProcessor::from_config(&config).unwrap().for_video(2);
    let frames = [p.preprocess(image.as_raw(), w, h), p.preprocess(flipped.as_raw(), w, h)];
    // The PNG: both resized frames stacked vertically, rebuilt here with the fused normalisation.
    let png = image::open(fixtures().join(format!("{case}.png"))).unwrap().to_rgb8();
    let (fh, fw) = (frames[0].height, frames[0].width);
    assert_eq!((png.width() as usize, png.height() as usize), (fw, 2 * fh), "{case}: resized size");
    let mean: Vec<f32> = record["image_mean"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let std: Vec<f32> = record["image_std"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    for (f, frame) in frames.iter().enumerate() {
        for c in 0..3 {
            let (m, s) = (mean[c] * 255.0, std[c] * 255.0);
            for y in 0..fh {
                for x in 0..fw {
                    let level = png.get_pixel(x as u32, (f * fh + y) as u32)[c] as f32;
                    let ours = frame.data[c * fh * fw + y * fw + x];
                    assert_eq!(ours, (level - m) / s, "{case}: frame {f} channel {c} at ({x}, {y})");
                }
            }
        }
    }
    let (patches, grid) = patchify(&[&frames[0], &frames[1]], patch as usize, 2, 2, false).unwrap();
    check_patches(case, &record, &patches, grid);
}

#[test]
fn qwen2_vl_video_processor_shrinks_frames_as_torchvision_does() {
    check_qwen_video("qwen_video_down_chelsea");
}

#[test]
fn qwen3_vl_video_processor_grows_frames_as_torchvision_does() {
    check_qwen_video("qwen3_video_up_chelsea");
}
