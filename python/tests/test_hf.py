"""`tokensieve.hf.apply` on the committed tiny random LLaVA and LLaVA-OneVision against `tokensieve ask` with the
same method: the same kept indices, the pruned prompt's last-position logits within 1e-4 (`ask --logits-out`) and
the same 20 greedy tokens, for image and video prompts."""

import json
import pathlib

import numpy as np
import pytest

import tokensieve as ts
import tokensieve.hf
from conftest import REPO, run

TINY = REPO / "models" / "tests" / "fixtures" / "tiny_llava"
QUESTION = "what is in the road"


@pytest.fixture(scope="module")
def llava():
    torch = pytest.importorskip("torch", reason="torch and transformers are part of the test environment")
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration.from_pretrained(TINY).eval()
    return model, Tokenizer.from_file(str(TINY / "tokenizer.json")), CLIPImageProcessor.from_pretrained(TINY)


def prompt_ids(tok, images: int):
    """The engine's prompt without a chat template, with the processor's expansion: 16 placeholders per image."""
    import torch

    text = "USER: " + " ".join(["<image>"] * (16 * images)) + "\n" + QUESTION + " ASSISTANT:"
    return torch.tensor([tok.encode(text).ids])


def adapted_answer(llava, pixels, images: int, method: str, ratio: float):
    model, tok, _ = llava
    ids = prompt_ids(tok, images)
    handle = ts.hf.apply(model, pruner=method, ratio=ratio)
    try:
        out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=20, min_new_tokens=20,
                             do_sample=False, query_ids=tok.encode(QUESTION).ids)
        kept = handle.last.indices.tolist()
        logits = last_logits(model, ids, {"pixel_values": pixels}, tok)
    finally:
        handle.remove()
    assert out.shape[1] > ids.shape[1] and (out[0, : ids.shape[1]] == ids[0]).all()
    return kept, tok.decode(out[0, ids.shape[1]:].tolist()), logits


def last_logits(model, ids, vision: dict, tok):
    """The patched model's last-position logits on the pruned prompt (a direct forward call)."""
    import torch

    with torch.no_grad():
        return model(input_ids=ids, query_ids=tok.encode(QUESTION).ids, **vision).logits[0, -1].numpy()


def ask(cli, tmp_path, model_dir, *args):
    """`tokensieve ask --json` with `--logits-out`: the record and the logits."""
    path = tmp_path / "logits.npy"
    record = json.loads(run([cli, "ask", "--model", model_dir, *args, "--max-new-tokens", "20", "--device", "cpu",
                             "--json", "--logits-out", path, QUESTION]))
    return record, np.load(path)


def assert_same(kept, answer, logits, record, cli_logits):
    assert kept == record["record"]["kept"]
    np.testing.assert_allclose(logits, cli_logits, rtol=0, atol=1e-4)
    assert answer.split() == record["answer"].split()


METHODS = ["todre", "divprune", "visionzip:cls=patch", "tome", "query", "pool", "prumerge-plus"]


@pytest.mark.parametrize("method", METHODS)
def test_an_image_prompt_keeps_and_answers_as_tokensieve_ask(cli, assets, llava, method, tmp_path):
    from PIL import Image

    image = assets / "images" / "chelsea.png"
    pixels = llava[2](images=Image.open(image).convert("RGB"), return_tensors="pt").pixel_values
    kept, answer, logits = adapted_answer(llava, pixels, 1, method, 0.25)
    record, cli_logits = ask(cli, tmp_path, TINY, "--image", image, "--pruner", method, "--ratio", "0.25")
    assert_same(kept, answer, logits, record, cli_logits)


@pytest.mark.parametrize("method", ["todre", "dycoke", "holitom", "fastvid"])
def test_a_video_prompt_keeps_and_answers_as_tokensieve_ask(cli, assets, llava, method, tmp_path):
    video = assets / "videos" / "vtest.avi"
    frames, _, _ = ts.sample(video, "uniform:frames=4")
    pixels = llava[2](images=list(frames), return_tensors="pt").pixel_values
    ratio = 0.75 if method == "dycoke" else 0.25  # DyCoke's official rule keeps 30 % of each compared frame
    kept, answer, logits = adapted_answer(llava, pixels, 4, method, ratio)
    record, cli_logits = ask(cli, tmp_path, TINY, "--video", video, "--frames", "4", "--pruner", method, "--ratio",
                             str(ratio))
    assert_same(kept, answer, logits, record, cli_logits)


def test_the_original_positions_reach_the_decoder(llava):
    """A pruned prompt's logits equal the unpatched model's on the same kept rows at their original positions, and
    differ from a contiguous renumbering (so the ids are really used)."""
    import torch

    model, tok, _ = llava
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = prompt_ids(tok, 1)
    handle = ts.hf.apply(model, pruner="divprune", keep=5)
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values=pixels).logits[0, -1]
        kept = handle.last.indices
        state = handle._prefill
    finally:
        handle.remove()
    with torch.no_grad():
        feats = torch.cat(list(model.model.get_image_features(pixel_values=pixels, vision_feature_layer=-2,
                                                              vision_feature_select_strategy="default").pooler_output))
        slots = (ids[0] == 63).nonzero().flatten()
        keep = torch.ones(ids.shape[1], dtype=torch.bool)
        keep[slots] = False
        keep[slots[kept]] = True
        emb = model.get_input_embeddings()(ids[0][keep])
        emb[ids[0][keep] == 63] = feats[kept]
        positions = torch.arange(ids.shape[1])[keep].unsqueeze(0)
        want = model(inputs_embeds=emb[None], position_ids=positions).logits[0, -1]
        renumbered = model(inputs_embeds=emb[None]).logits[0, -1]
    assert state.position_ids.tolist() == positions.tolist()
    torch.testing.assert_close(logits, want, rtol=0, atol=1e-5)
    assert (logits - renumbered).abs().max() > 1e-4


def test_refusals_name_what_is_missing(llava):
    model = llava[0]
    with pytest.raises(ts.TokensieveError, match="in-decoder"):
        ts.hf.apply(model, pruner="todre", ratio=0.5, in_llm="fastv")
    with pytest.raises(ts.TokensieveError, match="ratio"):
        ts.hf.apply(model, pruner="todre")
    with pytest.raises(ts.TokensieveError, match="not supported"):
        ts.hf.apply(object(), pruner="todre", ratio=0.5)
    handle = ts.hf.apply(model, pruner="todre", ratio=0.5)
    try:
        with pytest.raises(ts.TokensieveError, match="already patched"):
            ts.hf.apply(model, pruner="divprune", ratio=0.5)
    finally:
        handle.remove()
    assert "generate" not in model.__dict__ and "forward" not in model.__dict__
    ts.hf.apply(model, pruner="divprune", ratio=0.5).remove()


TINY_OV = REPO / "models" / "tests" / "fixtures" / "tiny_onevision"


@pytest.fixture(scope="module")
def onevision():
    pytest.importorskip("torch", reason="torch and transformers are part of the test environment")
    from tokenizers import Tokenizer
    from transformers import LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(TINY_OV).eval()
    config = json.loads((TINY_OV / "tokenizer_config.json").read_text())
    return model, Tokenizer.from_file(str(TINY_OV / "tokenizer.json")), config["chat_template"]


def onevision_prompt(tok, template: str, placeholder: str, count: int):
    """The engine's one user turn through the checkpoint's chat template, the placeholder expanded to `count`."""
    import jinja2
    import torch

    text = jinja2.Template(template).render(
        messages=[{"role": "user", "content": f"{placeholder}\n{QUESTION}"}], add_generation_prompt=True)
    return torch.tensor([tok.encode(text.replace(placeholder, " ".join([placeholder] * count), 1)).ids])


def onevision_answer(onevision, ids, vision: dict, method: str, ratio: float):
    model, tok, _ = onevision
    handle = ts.hf.apply(model, pruner=method, ratio=ratio)
    try:
        out = model.generate(input_ids=ids, max_new_tokens=20, min_new_tokens=20, do_sample=False,
                             query_ids=tok.encode(QUESTION).ids, **vision)
        kept = handle.last.indices.tolist()
        logits = last_logits(model, ids, vision, tok)
    finally:
        handle.remove()
    return kept, tok.decode(out[0, ids.shape[1]:].tolist()), logits


@pytest.mark.parametrize("method", ["todre", "holitom", "fastvid", "visionzip:cls=patch", "cdpruner", "prumerge-plus"])
def test_a_onevision_video_keeps_and_answers_as_tokensieve_ask(cli, assets, onevision, method, tmp_path):
    import torch
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    video = assets / "videos" / "vtest.avi"
    frames, _, _ = ts.sample(video, "uniform:frames=4")
    # Video frames are square views: resized to the tower's input, as the engine (and the video processor) does.
    square = SiglipImageProcessorPil(size={"height": 32, "width": 32}, resample=3, image_mean=[0.5] * 3,
                                     image_std=[0.5] * 3)
    pixels = torch.as_tensor(np.stack(square(images=list(frames), return_tensors="np").pixel_values))[None]
    ids = onevision_prompt(onevision[1], onevision[2], "<video>", 4 * 4 + 1)
    kept, answer, logits = onevision_answer(onevision, ids, {"pixel_values_videos": pixels}, method, 0.25)
    record, cli_logits = ask(cli, tmp_path, TINY_OV, "--video", video, "--frames", "4", "--pruner", method,
                             "--ratio", "0.25")
    assert_same(kept, answer, logits, record, cli_logits)


@pytest.mark.parametrize("method", ["todre", "divprune", "tome", "query"])
def test_a_onevision_any_resolution_image_keeps_and_answers_as_tokensieve_ask(cli, assets, onevision, method,
                                                                              tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor

    image = assets / "images" / "chelsea.png"
    processed = AutoImageProcessor.from_pretrained(TINY_OV)(images=Image.open(image).convert("RGB"),
                                                             return_tensors="pt")
    vision = {"pixel_values": processed.pixel_values, "image_sizes": processed.image_sizes}
    count = onevision[0].model.get_image_features(**vision).pooler_output[0].shape[0]
    ids = onevision_prompt(onevision[1], onevision[2], "<image>", count)
    kept, answer, logits = onevision_answer(onevision, ids, vision, method, 0.25)
    record, cli_logits = ask(cli, tmp_path, TINY_OV, "--image", image, "--pruner", method, "--ratio", "0.25")
    assert_same(kept, answer, logits, record, cli_logits)


@pytest.mark.parametrize("method", ["todre", "divprune", "visionzip:cls=patch", "prumerge-plus", "query"])
def test_several_onevision_images_keep_and_answer_as_tokensieve_ask(cli, assets, onevision, method, tmp_path):
    """Two images: each image's base view and its newline (the model's multi-image path, `batch_num_images`), the
    base views pruned together and the newlines kept; PruMerge+'s extra token after the last newline."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    images = [assets / "images" / "chelsea.png", assets / "images" / "coffee.png"]
    processed = AutoImageProcessor.from_pretrained(TINY_OV)(images=[Image.open(i).convert("RGB") for i in images],
                                                             return_tensors="pt")
    vision = {"pixel_values": processed.pixel_values, "image_sizes": processed.image_sizes,
              "batch_num_images": torch.tensor([2])}
    count = sum(f.shape[0] for f in onevision[0].model.get_image_features(**vision).pooler_output)
    ids = onevision_prompt(onevision[1], onevision[2], "<image>", count)
    kept, answer, logits = onevision_answer(onevision, ids, vision, method, 0.25)
    record, cli_logits = ask(cli, tmp_path, TINY_OV, "--image", images[0], "--image", images[1], "--pruner", method,
                             "--ratio", "0.25")
    assert_same(kept, answer, logits, record, cli_logits)
