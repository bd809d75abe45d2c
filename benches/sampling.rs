//! Time to sample 32 frames: seek-based decoding against decoding every frame, on the 80-second `vtest.avi` and on
//! a generated one-hour low-resolution H.264 video (160 x 90, 25 fps, a key frame every 10 s; made once with the
//! ffmpeg binary and cached under `$TOKENSIEVE_HOME/bench/`).
//!
//! `cargo bench --bench sampling --all-features` (or `make bench`). Target: the hour-long video samples 32 frames in
//! under 2 s on 2 cores. Each figure is the median of 3 runs (1 for decoding the whole hour), measured in one run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tokensieve::video::samplers::{uniform_indices, Uniform};
use tokensieve::video::{decode_each, probe, DecodeOptions};

fn hour_video() -> PathBuf {
    let dir = tokensieve::assets::home().join("bench");
    let path = dir.join("hour_160x90.mp4");
    if !path.is_file() {
        std::fs::create_dir_all(&dir).expect("cache folder");
        let partial = dir.join("hour_160x90.partial.mp4");
        eprintln!("generating {} (one hour, once)...", path.display());
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25"])
            .args(["-t", "3600", "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p"])
            .arg(&partial)
            .status()
            .expect("the ffmpeg binary is missing: run `make setup`")
            .success();
        assert!(ok, "ffmpeg could not generate the benchmark video");
        std::fs::rename(&partial, &path).expect("rename");
    }
    path
}

fn median_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let videos = [
        (
            "vtest.avi (80 s, 768x576, MS-MPEG4)",
            tokensieve::assets::require("videos/vtest.avi").expect("run make setup"),
            3,
        ),
        ("generated 1 h (160x90, H.264)", hour_video(), 1),
    ];
    println!("| video | 32 frames, seek ms | 32 frames, decode-everything ms | speed-up |");
    println!("|---|---:|---:|---:|");
    for (label, path, full_repeats) in videos {
        let info = probe(&path).expect("probe");
        let indices = uniform_indices(info.frames, 32, Uniform::Inclusive).expect("frames");
        let times: Vec<f64> = indices.iter().map(|&i| i as f64 / info.fps).collect();
        let run = |seek: bool| {
            let mut n = 0;
            decode_each(&path, &times, 224, 224, DecodeOptions { seek, ..DecodeOptions::default() }, |_| {
                n += 1;
                true
            })
            .expect("decode");
            assert_eq!(n, 32);
        };
        let seek = median_ms(3, || run(true));
        let full = median_ms(full_repeats, || run(false));
        println!("| {label} | {seek:.0} | {full:.0} | {:.1}x |", full / seek);
    }
}
