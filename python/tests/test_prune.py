"""`tokensieve.prune` and friends against the command line (`tokensieve prune`) on the same inputs."""

import json

import numpy as np
import pytest

import tokensieve as ts
from conftest import run

FRAMES, H, W, D = 4, 4, 6, 16
N = FRAMES * H * W


def inputs(seed: int = 0) -> dict:
    """Clustered tokens with every signal a method may read, on a 4 x 4 x 6 grid."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, D))
    x = centres[rng.integers(0, 6, N)] + 0.3 * rng.standard_normal((N, D))
    # Frames 0 and 1 nearly equal, so the temporal methods see static tokens.
    x[H * W : 2 * H * W] = x[: H * W] + 0.01 * rng.standard_normal((H * W, D))
    attn = rng.random(N) ** 3
    return {
        "features": x.astype(np.float32),
        "cls_attn": (attn / attn.sum()).astype(np.float32),
        "keys": (x @ rng.standard_normal((D, 8))).astype(np.float32),
        "importance": rng.random(N).astype(np.float32),
        "query": rng.standard_normal((3, D)).astype(np.float32),
        "relevance": rng.random(N).astype(np.float32),
    }


def ratio_for(method: str) -> float:
    """A quarter of the tokens, except for DyCoke, whose official rule keeps 30 % of every compared frame (62 of 96
    here) whatever the budget, and refuses a smaller one."""
    return 0.75 if method.startswith("dycoke") else 0.25


FLAGS = {"cls_attn": "--cls-attn", "keys": "--keys", "importance": "--importance", "query": "--query",
         "relevance": "--relevance"}


def cli_prune(cli, tmp_path, method: str, data: dict, ratio: float):
    paths = {}
    for name, a in data.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], a)
    out = tmp_path / "out.npy"
    cmd = [cli, "prune", "--features", paths["features"], "--method", method, "--ratio", ratio, "--grid",
           f"{FRAMES},{H},{W}", "--merged-out", out, "--json"]
    for name, flag in FLAGS.items():
        cmd += [flag, paths[name]]
    return json.loads(run(cmd)), np.load(out)


@pytest.mark.parametrize("method", [m["name"] for m in ts.methods()])
def test_every_method_gives_the_command_lines_indices_and_tokens(cli, tmp_path, method):
    data = inputs()
    spec = method + (":seed=5" if any(p["name"] == "seed" for p in _info(method)["params"]) else "")
    ratio = ratio_for(method)
    py = ts.prune(data["features"], spec, ratio=ratio, grid=(FRAMES, H, W),
                  **{k: v for k, v in data.items() if k != "features"})
    record, output = cli_prune(cli, tmp_path, spec, data, ratio)
    assert py.indices.tolist() == record["kept"]
    assert py.requested == record["k"] and py.notes == record["notes"]
    np.testing.assert_allclose(py.output, output, rtol=0, atol=1e-6)
    assert py.output.shape == (len(py.indices), D)
    assert (py.extra is not None) == ("extra_tokens" in record)
    if py.merged:
        assert py.sizes.tolist() == record["sizes"]
    assert 0 < len(py) <= py.requested


def _info(name: str) -> dict:
    return next(m for m in ts.methods() if m["name"] == name)


def test_the_registry_lists_parameters_signals_and_adaptivity():
    infos = {m["name"]: m for m in ts.methods()}
    assert {"todre", "mmr", "query", "cdpruner", "visionzip", "holitom", "dycoke"} <= set(infos)
    assert infos["visionzip"]["requires"] == ["cls_attn"]
    assert infos["holitom"]["requires"] == ["grid", "cls_attn"]
    assert set(infos["query"]["uses"]) == {"relevance", "query"}
    assert infos["todre"]["exact_budget"] and not infos["prumerge-plus"]["exact_budget"]
    assert any(p["name"] == "lambda" for p in infos["mmr"]["params"])


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_dtypes_are_converted_like_astype(dtype):
    x = inputs()["features"].astype(dtype)
    want = ts.prune(x.astype(np.float32), "divprune", keep=20)
    got = ts.prune(x, "divprune", keep=20)
    assert got.indices.tolist() == want.indices.tolist()
    assert got.output.dtype == np.float32


def test_torch_tensors_come_back_as_tensors_of_their_dtype():
    torch = pytest.importorskip("torch", reason="torch is part of the test environment (make setup)")
    x = torch.from_numpy(inputs()["features"]).to(torch.bfloat16)
    s = ts.prune(x, "todre:pivot=random,seed=1", ratio=0.1)
    want = ts.prune(x.float().numpy(), "todre:pivot=random,seed=1", ratio=0.1)
    assert isinstance(s.indices, torch.Tensor) and s.indices.tolist() == want.indices.tolist()
    assert s.output.dtype == torch.bfloat16 and s.output.shape == (len(want), D)
    # A CPU float32 tensor is read without a copy: the result equals the NumPy path exactly.
    f = torch.from_numpy(inputs()["features"])
    np.testing.assert_array_equal(ts.prune(f, "divprune", keep=7).output.numpy(),
                                  ts.prune(f.numpy(), "divprune", keep=7).output)


def test_bad_inputs_raise_with_the_rust_message():
    x = inputs()["features"]
    nan = x.copy()
    nan[3, 2] = np.nan
    cases = [
        (lambda: ts.prune(nan, "divprune", keep=4), "non-finite"),
        (lambda: ts.prune(x, "no-such-method", keep=4), "unknown method"),
        (lambda: ts.prune(x, "mmr", keep=4, **{"lambda": 7}), "lambda"),
        (lambda: ts.prune(x, "visionzip", keep=4), "needs"),
        (lambda: ts.prune(x, "divprune", keep=4, keys=x[:5]), "keys"),
        (lambda: ts.prune(x, "divprune", ratio=1.5), "budget"),
        (lambda: ts.prune(x, "divprune"), "keep"),
        (lambda: ts.prune(x[0], "divprune", keep=2), "2-D"),
        (lambda: ts.prune(x.astype(np.int32), "divprune", keep=2), "floats"),
        (lambda: ts.prune(x, "pool", keep=4, grid=(3, 4, 6)), "layout"),
    ]
    for call, words in cases:
        with pytest.raises(ts.TokensieveError, match=f"(?i){words}"):
            call()
    assert issubclass(ts.TokensieveError, ValueError)


def test_retained_count_is_the_kept_count_before_encoding():
    data = inputs()
    for m in ts.methods():
        ratio = ratio_for(m["name"])
        if not m["exact_budget"]:
            with pytest.raises(ts.TokensieveError, match="adaptive"):
                ts.retained_count(N, m["name"], ratio=ratio, grid=(FRAMES, H, W))
            bound = ts.retained_count(N, m["name"], ratio=ratio, grid=(FRAMES, H, W), upper_bound=True)
        spec = m["name"] + (":seed=5" if any(p["name"] == "seed" for p in m["params"]) else "")
        s = ts.prune(data["features"], spec, ratio=ratio, grid=(FRAMES, H, W),
                     **{k: v for k, v in data.items() if k != "features"})
        rows = len(s) + (0 if s.extra is None else len(s.extra))
        if m["exact_budget"]:
            assert ts.retained_count(N, spec, ratio=ratio, grid=(FRAMES, H, W)) == rows, m["name"]
        else:
            assert rows <= bound, m["name"]
