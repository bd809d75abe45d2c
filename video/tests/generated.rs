//! Decoding videos the tests encode themselves (with the `ffmpeg` binary setup installs), where every frame
//! carries its own index, so timestamps, seeks, truncation, rotation and bad input can be checked exactly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokensieve_video::{
    decode_at, decode_each, decode_in_background, load_views, probe, DecodeEvent, DecodeOptions, ImageError, VideoError,
};

const W: usize = 32;
const H: usize = 16;

fn ffmpeg(args: &[&str], stdin: Option<&[u8]>) {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .expect("the ffmpeg binary is missing: run `make setup`");
    if let Some(bytes) = stdin {
        child.stdin.take().expect("piped").write_all(bytes).expect("write frames");
    }
    assert!(child.wait().expect("ffmpeg runs").success(), "ffmpeg {args:?} failed");
}

/// Frame `i`: left half luma `16 + 14·(i % 16)`, right half `16 + 14·(i / 16)` (unique for i < 256).
fn counter_frames(count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * W * H);
    for i in 0..count {
        for _y in 0..H {
            for x in 0..W {
                out.push(if x < W / 2 { 16 + 14 * (i % 16) as u8 } else { 16 + 14 * (i / 16) as u8 });
            }
        }
    }
    out
}

/// Encodes `count` counter frames at `fps` with a key frame every `gop` frames.
fn counter_video(dir: &Path, name: &str, count: usize, fps: u32, codec: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let size = format!("{W}x{H}");
    let rate = fps.to_string();
    let mut args = vec!["-f", "rawvideo", "-pix_fmt", "gray", "-s", &size, "-r", &rate, "-i", "-"];
    args.extend_from_slice(codec);
    let out = path.to_str().unwrap().to_string();
    args.push(&out);
    ffmpeg(&args, Some(&counter_frames(count)));
    path
}

/// The frame index a decoded RGB frame of size w x h shows (reads the two halves' luma).
fn index_of(rgb: &[u8], w: usize, h: usize, halves_vertical: bool) -> usize {
    let mean = |pick: &dyn Fn(usize, usize) -> bool| {
        let (mut sum, mut n) = (0f64, 0f64);
        for y in 0..h {
            for x in 0..w {
                if pick(x, y) {
                    sum += rgb[(y * w + x) * 3 + 1] as f64;
                    n += 1.0;
                }
            }
        }
        sum / n
    };
    let (first, second) = if halves_vertical {
        (mean(&|_, y| y < h / 2 - 1), mean(&|_, y| y > h / 2))
    } else {
        (mean(&|x, _| x < w / 2 - 1), mean(&|x, _| x > w / 2))
    };
    let level = |v: f64| ((v - 16.0) / 14.0).round() as usize;
    level(first) + 16 * level(second)
}

#[test]
fn every_requested_frame_is_the_right_one_after_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let codecs: [(&str, &[&str]); 2] = [
        ("x264.mp4", &["-c:v", "libx264", "-qp", "0", "-g", "10", "-pix_fmt", "yuv444p"]),
        ("mpeg4.avi", &["-c:v", "mpeg4", "-q:v", "1", "-g", "12"]),
    ];
    for (name, codec) in codecs {
        let video = counter_video(dir.path(), name, 200, 25, codec);
        let info = probe(&video).unwrap();
        assert_eq!(info.frames, 200, "{name}: {info:?}");
        assert!((info.fps - 25.0).abs() < 1e-9 && (info.duration - 8.0).abs() < 0.05, "{name}: {info:?}");
        let wanted: Vec<usize> = vec![0, 3, 77, 78, 150, 199];
        let times: Vec<f64> = wanted.iter().map(|&i| i as f64 / 25.0).collect();
        let decoded = decode_at(&video, &times, W as u32, H as u32).unwrap();
        assert_eq!(decoded.stopped_at, None);
        for (f, &i) in decoded.frames.iter().zip(&wanted) {
            assert_eq!(index_of(&f.rgb, W, H, false), i, "{name}: wanted frame {i} at {:.3} s", f.requested);
            assert!((f.timestamp - i as f64 / 25.0).abs() < 1e-6, "{name}: frame {i} stamped {}", f.timestamp);
        }
    }
}

#[test]
fn truncated_and_corrupt_files_decode_what_they_can() {
    let dir = tempfile::tempdir().unwrap();
    let video = counter_video(dir.path(), "full.avi", 200, 25, &["-c:v", "mpeg4", "-q:v", "1", "-g", "12"]);
    let bytes = std::fs::read(&video).unwrap();
    let cut = dir.path().join("cut.avi");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let decoded = decode_at(&cut, &[0.4, 7.9], W as u32, H as u32).unwrap();
    assert_eq!(index_of(&decoded.frames[0].rgb, W, H, false), 10);
    let stopped = decoded.stopped_at.expect("the cut file ends early");
    assert!(stopped > 2.0 && stopped < 7.0, "stopped at {stopped}");
    assert_eq!(decoded.frames[1].timestamp, stopped);

    let mut garbled = bytes.clone();
    let middle = garbled.len() / 2;
    garbled[middle..middle + 4000].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 131 % 251) as u8);
    let bad = dir.path().join("garbled.avi");
    std::fs::write(&bad, &garbled).unwrap();
    // Either frames (decoders resynchronise) or a typed error; never a panic or a hang. The garbage starts at the
    // file's middle, so when frames come back the first one is the untouched frame 0.
    match decode_at(&bad, &[0.0, 4.0, 7.9], W as u32, H as u32) {
        Ok(d) => {
            assert_eq!(d.frames.len(), 3);
            assert_eq!(index_of(&d.frames[0].rgb, W, H, false), 0, "the frame before the garbage decodes intact");
        }
        Err(e @ (VideoError::Decode { .. } | VideoError::Empty { .. })) => {
            assert!(e.to_string().starts_with(&bad.display().to_string()), "the error names the file: {e}");
        }
        Err(e) => panic!("a garbled middle is a decoding error, not {e:?}"),
    }
}

#[test]
fn rotation_metadata_turns_frames_upright_as_the_ffmpeg_cli_does() {
    let dir = tempfile::tempdir().unwrap();
    let video = counter_video(dir.path(), "plain.mp4", 30, 10, &["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"]);
    let rotated = dir.path().join("rotated.mp4");
    ffmpeg(
        &["-i", video.to_str().unwrap(), "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated.to_str().unwrap()],
        None,
    );
    // FFmpeg 5.1's mov muxer stores `rotate=90` as a 90° counter-clockwise display matrix, i.e. 270° clockwise.
    let info = probe(&rotated).unwrap();
    assert_eq!(info.rotation, 270, "{info:?}");
    // Frame 3: left half level 3, right half level 0. Upright output is 16 wide and 32 tall.
    let ours = &decode_at(&rotated, &[0.3], H as u32, W as u32).unwrap().frames[0].rgb;
    // The oracle: the ffmpeg binary's own autorotation of the same frame.
    let raw = dir.path().join("frame3.rgb");
    ffmpeg(
        &[
            "-i",
            rotated.to_str().unwrap(),
            "-vf",
            "select=eq(n\\,3)",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            raw.to_str().unwrap(),
        ],
        None,
    );
    let theirs = std::fs::read(&raw).unwrap();
    assert_eq!(theirs.len(), ours.len(), "the CLI's upright frame has another size");
    let half_means = |rgb: &[u8]| {
        let mean = |rows: std::ops::Range<usize>| {
            let vals: Vec<f64> =
                rows.flat_map(|y| (0..H).map(move |x| (y * H + x) * 3 + 1)).map(|i| rgb[i] as f64).collect();
            vals.iter().sum::<f64>() / vals.len() as f64
        };
        (mean(0..W / 2 - 1), mean(W / 2 + 1..W))
    };
    let (ours_top, ours_bottom) = half_means(ours);
    let (their_top, their_bottom) = half_means(&theirs);
    assert!(
        (ours_top - their_top).abs() < 3.0 && (ours_bottom - their_bottom).abs() < 3.0,
        "{ours_top} {ours_bottom} vs {their_top} {their_bottom}"
    );
    assert!(
        (ours_bottom - (16.0 + 14.0 * 3.0)).abs() < 3.0 && (ours_top - 16.0).abs() < 3.0,
        "{ours_top} {ours_bottom}"
    );
}

#[test]
fn background_decoding_streams_frames_then_reports() {
    let dir = tempfile::tempdir().unwrap();
    let video = counter_video(dir.path(), "bg.mp4", 50, 25, &["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"]);
    let rx = decode_in_background(video, vec![0.0, 1.0, 1.96], W as u32, H as u32, DecodeOptions::default());
    let events: Vec<_> = rx.iter().map(|e| e.unwrap()).collect();
    assert_eq!(events.len(), 4);
    let indices: Vec<usize> = events[..3]
        .iter()
        .map(|e| match e {
            DecodeEvent::Frame(f) => index_of(&f.rgb, W, H, false),
            other => panic!("expected a frame, got {other:?}"),
        })
        .collect();
    assert_eq!(indices, vec![0, 25, 49]);
    assert_eq!(events[3], DecodeEvent::Done(None));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("tone.wav");
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", audio.to_str().unwrap()], None);
    assert!(matches!(probe(&audio), Err(VideoError::NoVideoStream { .. })));
    let video = counter_video(dir.path(), "small.mp4", 5, 25, &["-c:v", "libx264", "-pix_fmt", "yuv420p"]);
    let limited = DecodeOptions { max_pixels: 100, ..DecodeOptions::default() };
    let err = decode_each(&video, &[0.0], 8, 8, limited, |_| true).unwrap_err();
    assert!(matches!(err, VideoError::Resolution { width: 32, height: 16, limit: 100, .. }), "{err}");
    assert!(matches!(decode_at(&video, &[0.0], 0, 8), Err(VideoError::OutputSize { .. })));
}

#[test]
fn camera_views_come_back_in_nuscenes_order() {
    let assets = std::env::var_os("TOKENSIEVE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tokensieve/assets"));
    let (a, c) = (assets.join("images/astronaut.png"), assets.join("images/coffee.png"));
    assert!(a.is_file() && c.is_file(), "sample images missing under {}: run `make setup`", assets.display());
    let views = load_views(&[("CAM_BACK".into(), c.clone()), ("CAM_FRONT".into(), a.clone())], 24, 16).unwrap();
    assert_eq!(views.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec!["CAM_FRONT", "CAM_BACK"]);
    assert_eq!(views[0].1.rgb.len(), 24 * 16 * 3);
    assert!(matches!(load_views(&[("CAM_TOP".into(), a.clone())], 8, 8), Err(ImageError::Camera(_))));
    assert!(matches!(
        load_views(&[("CAM_BACK".into(), a.clone()), ("CAM_BACK".into(), c)], 8, 8),
        Err(ImageError::DuplicateCamera("CAM_BACK"))
    ));
    assert!(matches!(load_views(&[("CAM_BACK".into(), dir_missing())], 8, 8), Err(ImageError::Read { .. })));
}

fn dir_missing() -> PathBuf {
    PathBuf::from("/nonexistent/cam.jpg")
}
