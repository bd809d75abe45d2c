"""The samplers from Python against the command line's `tokensieve sample` on the sample video."""

import json

import numpy as np
import pytest

import tokensieve as ts
from conftest import run


def cli_indices(cli, video, *args):
    return [f["index"] for f in json.loads(run([cli, "sample", video, "--json", *args]))["frames"]]


def test_sample_decodes_what_the_command_line_picks(cli, assets):
    video = assets / "videos" / "vtest.avi"
    frames, times, indices = ts.sample(video, "uniform:frames=6")
    assert indices == cli_indices(cli, video, "--sampler", "uniform", "--frames", "6")
    assert frames.dtype == np.uint8 and frames.shape[0] == 6 and frames.shape[3] == 3
    assert times == sorted(times) and len(times) == 6
    # Decoded frames differ from one another (a real decode, not one frame repeated).
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0
    _, _, interior = ts.sample(video, "uniform-interior:frames=5")
    assert interior == cli_indices(cli, video, "--sampler", "uniform-interior", "--frames", "5")
    _, _, dcode = ts.sample(video, "dcode:frames=6,candidates=20")
    assert dcode == cli_indices(cli, video, "--sampler", "dcode", "--frames", "6", "--candidates", "20")
    with pytest.raises(ts.TokensieveError, match="known: uniform"):
        ts.sample(video, "no-such-sampler")
    with pytest.raises(ts.TokensieveError):
        ts.sample(assets / "videos" / "missing.avi", "uniform")


def test_index_rules_need_no_video(cli, assets, tmp_path):
    assert ts.uniform_indices(100, 5) == [0, 24, 49, 74, 99]
    assert ts.uniform_indices(100, 4, "interior") == [20, 40, 60, 80]
    # D-CoDe: frames 0-9 are one scene, 10-19 another; the uniform share plus the most dissimilar frames.
    rng = np.random.default_rng(1)
    e = np.repeat(rng.standard_normal((2, 8)), 10, axis=0) + 0.01 * rng.standard_normal((20, 8))
    picked = ts.dcode_frames(e, 4, uniform_ratio=0.5)
    assert len(picked) == 4 and picked == sorted(picked) and {0, 19} <= set(picked)
    # F2C from relevance scores equals the command line's plan on the same scores.
    relevance = np.zeros(32, dtype=np.float32)
    relevance[20] = 1.0
    np.save(tmp_path / "r.npy", relevance)
    plan = ts.f2c_plan(relevance, budget=1600, anchors=2)
    video = assets / "videos" / "vtest.avi"
    record = json.loads(run([cli, "sample", video, "--sampler", "f2c", "--relevance", tmp_path / "r.npy",
                             "--budget", "1600", "--anchors", "2", "--json"]))
    # The command line spreads the 32 candidates uniformly over the video and reports video frame indices.
    candidates = ts.uniform_indices(ts.probe(video)["frames"], 32)
    assert [f["index"] for f in record["frames"]] == [candidates[i] for i in plan["frames"]]
    assert record["details"]["clip_len"] == plan["clip_len"] and record["details"]["tokens"] == plan["tokens"]
    assert 20 in plan["frames"] and plan["tokens"] <= 1600
