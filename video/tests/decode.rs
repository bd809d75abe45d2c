//! Decoding real sample videos from the setup cache (fails loudly when `make setup` has not run).

use std::path::PathBuf;
use tokensieve_video::{decode_at, decode_each, probe, sample_uniform, DecodeOptions, VideoError};

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

#[test]
fn every_sample_codec_decodes() {
    // H.264 Main/High, MS-MPEG4v3, Cinepak: one frame from the middle of each real sample video.
    for name in [
        "videos/bigbuckbunny.mp4",
        "videos/bikes.mp4",
        "videos/carphone_pristine.mp4",
        "videos/vtest.avi",
        "videos/tree.avi",
        "videos/box.mp4",
        "videos/cup.mp4",
    ] {
        let path = asset(name);
        let info = probe(&path).unwrap();
        assert!(info.frames > 10 && info.fps > 1.0, "{name}: {info:?}");
        let middle = info.duration / 2.0;
        let decoded = decode_at(&path, &[middle], 48, 32).unwrap();
        assert_eq!(decoded.stopped_at, None, "{name}");
        let f = &decoded.frames[0];
        // tree.avi drops frames (14.67 s is followed by 15.13 s), so "nearest" can be several frame periods away.
        assert!((f.timestamp - middle).abs() <= 0.5, "{name}: {} vs {middle}", f.timestamp);
        // Seeking must pick the very frame that decoding everything picks.
        let mut linear = None;
        let no_seek = DecodeOptions { seek: false, ..DecodeOptions::default() };
        decode_each(&path, &[middle], 48, 32, no_seek, |g| {
            linear = Some(g);
            true
        })
        .unwrap();
        assert_eq!(linear.as_ref(), Some(f), "{name}: seek and linear decoding disagree");
        let spread = f.rgb.iter().max().unwrap() - f.rgb.iter().min().unwrap();
        assert!(spread > 20, "{name}: a flat frame suggests a decoding failure");
    }
}

#[test]
fn a_truncated_copy_of_a_real_clip_reports_where_it_stopped() {
    let bytes = std::fs::read(asset("videos/bikes.mp4")).unwrap();
    let dir = std::env::temp_dir().join(format!("tokensieve-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // mp4 keeps its index up front here, so the container still opens and promises 10 s.
    let cut = dir.join("bikes_cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    match decode_at(&cut, &[1.0, 9.5], 32, 16) {
        Ok(d) => {
            let stopped = d.stopped_at.expect("half the file cannot reach 9.5 s");
            assert!(stopped < 9.5 && d.frames.len() == 2, "{stopped}");
        }
        Err(e) => assert!(matches!(e, VideoError::Open { .. } | VideoError::Decode { .. }), "{e}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}
