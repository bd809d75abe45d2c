"""`tokensieve.hf.apply` on the committed tiny random Qwen2.5-VL and Qwen3-VL against `tokensieve ask` with the same
method: the same kept indices, the pruned prompt's last-position logits within 1e-4 (`ask --logits-out`) and the same
greedy tokens (up to 20, both stopping at the checkpoint's end token), for an image, two images of different sizes
and a video prompt.

The image goes through transformers' PIL processor (`Qwen2VLImageProcessorPil`, bit-identical to the engine's). The
video processors of transformers need torchvision, which this environment does not install, so the video is made
at a size `smart_resize` keeps (no resampling happens on either side) and its patches are cut by the processor's
own formula, transcribed in `video_patches`. On Qwen3-VL a run without the DeepStack planes is shown to differ, so
the planes' bookkeeping is tested too."""

import json
import shutil
import subprocess

import numpy as np
import pytest

import tokensieve as ts
import tokensieve.hf
from conftest import REPO, run

FIXTURES = REPO / "models" / "tests" / "fixtures"
QUESTION = "what is in the road"
FAMILIES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def qwen(request):
    pytest.importorskip("torch", reason="torch and transformers are part of the test environment")
    import transformers
    from tokenizers import Tokenizer

    path = FIXTURES / f"tiny_{request.param}"
    model = getattr(transformers, FAMILIES[request.param]).from_pretrained(path).eval()
    template = json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
    return request.param, path, model, Tokenizer.from_file(str(path / "tokenizer.json")), template


@pytest.fixture(scope="module")
def videos(tmp_path_factory, assets):
    """vtest.avi's first 4 s at sizes each family's `smart_resize` keeps: 224 x 168 (Qwen2.5-VL: multiples of 28)
    and 256 x 192 (Qwen3-VL: multiples of 32), within both checkpoints' pixel bounds."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("the ffmpeg command is missing: `make setup` installs it")
    out = {}
    for family, size in (("qwen2_5_vl", "224:168"), ("qwen3_vl", "256:192")):
        path = tmp_path_factory.mktemp(family) / "small.mp4"
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", assets / "videos" / "vtest.avi", "-t", "4", "-vf",
                        f"scale={size}", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", path], check=True)
        out[family] = path
    return out


def video_patches(frames: np.ndarray, cfg: dict):
    """Qwen2VLVideoProcessor / Qwen3VLVideoProcessor on frames already at their `smart_resize` size: rescale and
    normalise (in float64 then float32, as the PIL processor), pad to whole temporal patches with the last frame,
    then patches `[t·h·w, C·2·P·P]` in merge blocks; returns them and the grid `[[t, h, w]]`."""
    import torch

    t, h, w, c = frames.shape
    tp, ps, m = cfg["temporal_patch_size"], cfg["patch_size"], cfg["merge_size"]
    mean, std = np.array(cfg["image_mean"], np.float32), np.array(cfg["image_std"], np.float32)
    x = (((frames.astype(np.float64) * cfg["rescale_factor"]).astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)
    if t % tp:
        x = np.concatenate([x, np.repeat(x[-1:], tp - t % tp, 0)])
    gt, gh, gw = x.shape[0] // tp, h // ps, w // ps
    x = x.reshape(gt, tp, c, gh // m, m, ps, gw // m, m, ps).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return torch.from_numpy(np.ascontiguousarray(x.reshape(gt * gh * gw, -1))), torch.tensor([[gt, gh, gw]])


def prompt(tok, template: str, span: str):
    """The engine's one user turn through the checkpoint's chat template."""
    import jinja2
    import torch

    text = jinja2.Template(template).render(messages=[{"role": "user", "content": f"{span}\n{QUESTION}"}],
                                            add_generation_prompt=True)
    return torch.tensor([tok.encode(text).ids])


def image_inputs(qwen, assets, names=("chelsea.png",)):
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _, path, _, tok, template = qwen
    cfg = json.loads((path / "preprocessor_config.json").read_text())
    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": cfg["min_pixels"], "longest_edge": cfg["max_pixels"]},
                                         image_mean=cfg["image_mean"], image_std=cfg["image_std"],
                                         patch_size=cfg["patch_size"])
    images = [assets / "images" / name for name in names]
    out = processor([Image.open(i).convert("RGB") for i in images], return_tensors="pt")
    counts = [int(g.prod()) // cfg["merge_size"] ** 2 for g in out["image_grid_thw"]]
    ids = prompt(tok, template, "".join("<|vision_start|>" + "<|image_pad|>" * c + "<|vision_end|>" for c in counts))
    vision = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    return ids, vision, [arg for i in images for arg in ("--image", i)]


def video_inputs(qwen, video):
    import torch

    family, path, _, tok, template = qwen
    frames, times, _ = ts.sample(video, "uniform:frames=4")
    cfg = json.loads((path / "video_preprocessor_config.json").read_text())
    pixels, grid = video_patches(frames, cfg)
    t, per = int(grid[0, 0]), int(grid[0, 1] * grid[0, 2]) // cfg["merge_size"] ** 2
    one = "<|vision_start|>" + "<|video_pad|>" * per + "<|vision_end|>"
    vision = {"pixel_values_videos": pixels, "video_grid_thw": grid}
    if family == "qwen3_vl":
        # Each temporal patch after its time, the mean of its two frames' (Qwen3VLProcessor._calculate_timestamps).
        span = "".join(f"<{(times[2 * p] + times[2 * p + 1]) / 2:.1f} seconds>{one}" for p in range(t))
    else:
        span = one.replace("<|video_pad|>" * per, "<|video_pad|>" * (per * t))
        # The frames' interval times the temporal patch: the seconds between temporal patches.
        vision["second_per_grid_ts"] = torch.tensor([(times[-1] - times[0]) / (len(times) - 1) * 2])
    return prompt(tok, template, span), vision, ["--video", video, "--frames", "4"]


def adapted(qwen, ids, vision: dict, method: str, deepstack: bool = True):
    """The patched model's kept indices, greedy answer and last-position logits on the pruned prompt."""
    import torch

    _, _, model, tok, _ = qwen
    handle = ts.hf.apply(model, pruner=method, ratio=0.25)
    query = tok.encode(QUESTION).ids
    try:
        out = model.generate(input_ids=ids, max_new_tokens=20, do_sample=False, query_ids=query, **vision)
        kept = handle.last.indices.tolist()
        if not deepstack:
            original = handle._prepare

            def without(*args, **kw):
                embeds = original(*args, **kw)
                handle._prefill.deepstack = None
                return embeds

            handle._prepare = without
        with torch.no_grad():
            logits = model(input_ids=ids, query_ids=query, **vision).logits[0, -1].numpy()
    finally:
        handle.remove()
    assert (out[0, : ids.shape[1]] == ids[0]).all()
    return kept, tok.decode(out[0, ids.shape[1]:].tolist()), logits


def ask(cli, tmp_path, model_dir, media, method):
    path = tmp_path / "logits.npy"
    record = json.loads(run([cli, "ask", "--model", model_dir, *media, "--pruner", method, "--ratio", "0.25",
                             "--max-new-tokens", "20", "--device", "cpu", "--json", "--logits-out", path, QUESTION]))
    return record, np.load(path)


def assert_same(adapter, cli_run):
    (kept, answer, logits), (record, cli_logits) = adapter, cli_run
    assert kept == record["record"]["kept"]
    np.testing.assert_allclose(logits, cli_logits, rtol=0, atol=1e-4)
    assert answer.split() == record["answer"].split()


@pytest.mark.parametrize("method", ["todre", "divprune", "visionzip:cls=patch", "vispruner", "query", "cdpruner",
                                    "prumerge-plus", "tome", "pool"])
def test_an_image_prompt_keeps_and_answers_as_tokensieve_ask(cli, assets, qwen, method, tmp_path):
    ids, vision, media = image_inputs(qwen, assets)
    assert_same(adapted(qwen, ids, vision, method), ask(cli, tmp_path, qwen[1], media, method))


@pytest.mark.parametrize("method", ["todre", "divprune", "holitom", "fastvid", "vispruner", "prumerge-plus"])
def test_a_video_prompt_keeps_and_answers_as_tokensieve_ask(cli, videos, qwen, method, tmp_path):
    ids, vision, media = video_inputs(qwen, videos[qwen[0]])
    assert_same(adapted(qwen, ids, vision, method), ask(cli, tmp_path, qwen[1], media, method))
    if qwen[0] == "qwen3_vl":
        _, _, bare = adapted(qwen, ids, vision, method, deepstack=False)
        assert np.abs(bare - adapted(qwen, ids, vision, method)[2]).max() > 1e-3, "DeepStack reaches the logits"


@pytest.mark.parametrize("method", ["todre", "divprune", "query"])
def test_images_of_different_sizes_keep_and_answer_as_tokensieve_ask(cli, assets, qwen, method, tmp_path):
    """A landscape and a square photo resize to two grids: each is its own span, pruned as one flat sequence."""
    ids, vision, media = image_inputs(qwen, assets, ["chelsea.png", "astronaut.png"])
    grids = vision["image_grid_thw"].tolist()
    assert grids[0] != grids[1], grids
    assert_same(adapted(qwen, ids, vision, method), ask(cli, tmp_path, qwen[1], media, method))
