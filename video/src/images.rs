//! Still images as frames: a list of image files, or one multi-camera driving sample (the six nuScenes cameras,
//! kept as a view axis in a fixed order so token layouts are `views x frames x height x width`).

use crate::decode::Frame;
use image::imageops::FilterType;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why images could not be loaded.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The file could not be read or decoded.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A camera name that is not one of the six nuScenes cameras.
    #[error("unknown camera `{0}` (expected CAM_FRONT, CAM_FRONT_LEFT, CAM_FRONT_RIGHT, CAM_BACK, CAM_BACK_LEFT or CAM_BACK_RIGHT)")]
    Camera(String),
    /// The same camera given twice.
    #[error("camera {0} given twice")]
    DuplicateCamera(&'static str),
}

/// The nuScenes surround cameras, in the order views are stacked.
pub const NUSCENES_CAMERAS: [&str; 6] =
    ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"];

/// Loads one image as an RGB8 frame resized to `width x height` (bilinear); its timestamp is 0.
pub fn load_image(path: &Path, width: u32, height: u32) -> Result<Frame, ImageError> {
    let img = image::open(path).map_err(|e| ImageError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    let rgb = img.resize_exact(width, height, FilterType::Triangle).to_rgb8();
    Ok(Frame { timestamp: 0.0, requested: 0.0, width, height, rgb: rgb.into_raw() })
}

/// Loads one image as an RGB8 frame at its own size.
pub fn load_image_native(path: &Path) -> Result<Frame, ImageError> {
    let img =
        image::open(path).map_err(|e| ImageError::Read { path: path.to_path_buf(), reason: e.to_string() })?.to_rgb8();
    let (width, height) = img.dimensions();
    Ok(Frame { timestamp: 0.0, requested: 0.0, width, height, rgb: img.into_raw() })
}

/// Loads a list of images as frames, in the order given.
pub fn load_images(paths: &[PathBuf], width: u32, height: u32) -> Result<Vec<Frame>, ImageError> {
    paths.iter().map(|p| load_image(p, width, height)).collect()
}

/// Puts `(camera name, image)` pairs given in any order into [`NUSCENES_CAMERAS`] order (cameras not given are left
/// out); an unknown or repeated camera is an error.
pub fn order_views(views: &[(String, PathBuf)]) -> Result<Vec<(&'static str, &PathBuf)>, ImageError> {
    let mut slots: Vec<Option<&PathBuf>> = vec![None; NUSCENES_CAMERAS.len()];
    for (name, path) in views {
        let i = NUSCENES_CAMERAS.iter().position(|c| c == name).ok_or_else(|| ImageError::Camera(name.clone()))?;
        if slots[i].replace(path).is_some() {
            return Err(ImageError::DuplicateCamera(NUSCENES_CAMERAS[i]));
        }
    }
    Ok(slots.into_iter().enumerate().filter_map(|(i, p)| p.map(|p| (NUSCENES_CAMERAS[i], p))).collect())
}

/// Loads one multi-camera sample from `(camera name, image)` pairs in any order; returns the views in
/// [`NUSCENES_CAMERAS`] order (cameras not given are left out) with their names.
pub fn load_views(
    views: &[(String, PathBuf)],
    width: u32,
    height: u32,
) -> Result<Vec<(&'static str, Frame)>, ImageError> {
    order_views(views)?.into_iter().map(|(name, p)| Ok((name, load_image(p, width, height)?))).collect()
}
