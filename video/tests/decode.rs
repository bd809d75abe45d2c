//! Decoding real sample videos from the setup cache (fails loudly when `make setup` has not run).

use std::path::PathBuf;
use tokensieve_video::{decode_at, probe, sample_uniform, VideoError};

fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("TOKENSIEVE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tokensieve/assets"));
    let path = root.join(name);
    assert!(path.is_file(), "asset {} is missing: run `make setup`", path.display());
    path
}

#[test]
fn probes_the_long_street_clip() {
    let info = probe(&asset("videos/vtest.avi")).unwrap();
    assert_eq!((info.width, info.height), (768, 576));
    assert!((info.fps - 10.0).abs() < 0.01, "{info:?}");
    assert!((info.duration - 79.5).abs() < 0.6, "{info:?}");
}

#[test]
fn uniform_sampling_seeks_to_the_requested_times() {
    let frames = sample_uniform(&asset("videos/vtest.avi"), 8, 64, 48).unwrap();
    assert_eq!(frames.len(), 8);
    let info = probe(&asset("videos/vtest.avi")).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let index = (i as f64 * (info.frames - 1) as f64 / 7.0) as usize;
        let expected = index as f64 / info.fps;
        assert!((f.timestamp - expected).abs() <= 0.5 / info.fps + 1e-6, "frame {i}: {} vs {expected}", f.timestamp);
        assert_eq!(f.rgb.len(), 64 * 48 * 3);
    }
    assert_ne!(frames[0].rgb, frames[7].rgb, "first and last frames should differ");
}

#[test]
fn h264_frames_land_on_their_timestamps() {
    let frames = decode_at(&asset("videos/bikes.mp4"), &[2.0, 0.0, 5.0], 32, 16).unwrap().frames;
    let times: Vec<f64> = frames.iter().map(|f| f.timestamp).collect();
    for (got, want) in times.iter().zip([0.0, 2.0, 5.0]) {
        assert!((got - want).abs() <= 0.02 + 1e-9, "{times:?}");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    assert!(matches!(probe("/nonexistent/clip.mp4".as_ref()), Err(VideoError::Open { .. })));
    let dir = std::env::temp_dir().join(format!("tokensieve-video-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.mp4");
    std::fs::write(&text, "this is not a video").unwrap();
    assert!(matches!(probe(&text), Err(VideoError::Open { .. })));
    std::fs::remove_dir_all(&dir).ok();
}
