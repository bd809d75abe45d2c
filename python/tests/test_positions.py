"""`tokensieve.positions` against transformers' own rope index on the unpruned prompt: the kept tokens' ids are the
unpruned ids gathered at the kept places, and the text after the span starts where it started unpruned."""

import numpy as np
import pytest

import tokensieve as ts


def rope_index(model_cls, config_cls, grid, kind, before, after, second_per_grid=None):
    """transformers' 3-D ids of `before` text tokens, one vision span (LLM grid T x h x w), `after` text tokens."""
    torch = pytest.importorskip("torch", reason="torch and transformers are part of the test environment")
    t, h, w = grid
    merge = 2
    config = config_cls(
        text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "intermediate_size": 32, "vocab_size": 64,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]}},
        vision_config={"depth": 1, "hidden_size": 16, "out_hidden_size": 16, "num_heads": 2,
                       "spatial_merge_size": merge, "tokens_per_second": 2, "intermediate_size": 16},
    )
    model = model_cls(config).eval()
    n = t * h * w
    types = [0] * before + [kind] * n + [0] * after
    ids = torch.zeros(1, len(types), dtype=torch.long)
    thw = torch.tensor([[t, h * merge, w * merge]])
    kwargs = {"image_grid_thw": thw} if kind == 1 else {"video_grid_thw": thw}
    if second_per_grid is not None:
        kwargs["second_per_grid_ts"] = torch.tensor([second_per_grid])
    pos, _ = model.get_rope_index(ids, torch.tensor([types]), **kwargs)
    return pos[:, 0].numpy()


@pytest.mark.parametrize("grid,kind,second", [((1, 5, 7), 1, None), ((3, 4, 4), 2, 1.0), ((6, 2, 3), 2, 0.5)])
def test_kept_ids_equal_transformers_ids_of_the_kept_places(grid, kind, second):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    before, after = 3, 4
    full = rope_index(Qwen2_5_VLModel, Qwen2_5_VLConfig, grid, kind, before, after, second)
    n = int(np.prod(grid))
    kept = np.sort(np.random.default_rng(n).choice(n, n // 3, replace=False))
    scale = 1.0 if kind == 1 else 2 * second  # tokens_per_second x second_per_grid_t
    ids, nxt = ts.positions(kept, grid, offset=before, temporal_scale=scale)
    np.testing.assert_array_equal(ids, full[:, before + kept])
    assert (full[:, before + n] == nxt).all()


def test_qwen2_vl_images_and_one_dimensional_decoders():
    from transformers import Qwen2VLConfig, Qwen2VLModel

    full = rope_index(Qwen2VLModel, Qwen2VLConfig, (2, 3, 3), 2, 2, 2)
    kept = np.array([0, 4, 9, 17])
    ids, nxt = ts.positions(kept, (2, 3, 3), offset=2)
    np.testing.assert_array_equal(ids, full[:, 2 + kept])
    assert (full[:, 2 + 18] == nxt).all()
    # LLaVA-style 1-D ids: the kept places of 0..N, text after continues from offset + N.
    ids, nxt = ts.positions(kept, 18, offset=5, mrope=False)
    assert ids.tolist() == [5, 9, 14, 22] and nxt == 23
    with pytest.raises(ts.TokensieveError, match="grid"):
        ts.positions(kept, 18, offset=0, mrope=True)
    with pytest.raises(ts.TokensieveError, match="kept"):
        ts.positions([18], 18, mrope=False)
