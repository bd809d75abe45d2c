"""tokensieve: send vision-language models fewer visual tokens.

The pruners, the position bookkeeping and the frame samplers of the Rust toolkit, on NumPy arrays and torch
tensors. Nothing here links libtorch: torch tensors are read through NumPy (no copy for a contiguous float32 CPU
tensor; one device-to-host copy of the ``[N, D]`` tokens for a GPU tensor) and results go back to the input's device.

>>> import numpy as np, tokensieve
>>> x = np.random.default_rng(0).standard_normal((576, 64)).astype(np.float32)
>>> s = tokensieve.prune(x, "todre", ratio=0.25, pivot="random", seed=3)
>>> len(s.indices)
144

``tokensieve.hf`` patches loaded transformers LLaVA and LLaVA-OneVision models so that ``generate()`` runs on the
kept tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import TokensieveError

__version__ = _native.__version__
__all__ = [
    "Selection",
    "TokensieveError",
    "dcode_frames",
    "f2c_plan",
    "methods",
    "positions",
    "probe",
    "prune",
    "retained_count",
    "sample",
    "uniform_indices",
]

Grid = Union[Tuple[int, int, int], Tuple[int, int, int, int], Sequence[int]]


def _torch():
    """The torch module when it is already imported by the caller (tokensieve never imports it itself)."""
    import sys

    return sys.modules.get("torch")


def _is_tensor(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _float32(x: Any, name: str, ndim: int) -> Optional[np.ndarray]:
    """``x`` as a C-contiguous float32 array of ``ndim`` dimensions, or a TokensieveError naming ``name``."""
    if x is None:
        return None
    if _is_tensor(x):
        t = x.detach()
        if not t.is_floating_point():
            raise TokensieveError(f"{name} must be a floating-point tensor, got {t.dtype}")
        # bfloat16 and float16 have no lossless NumPy path through the array protocol: widen on the device first.
        a = t.to(dtype=_torch().float32).cpu().numpy()
    else:
        a = np.asarray(x)
        if a.dtype != np.float32:
            if a.dtype.kind != "f" and a.dtype.name != "bfloat16":
                raise TokensieveError(f"{name} must hold floats, got dtype {a.dtype}")
            a = a.astype(np.float32)
    if ndim == 1 and a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != ndim:
        raise TokensieveError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    return np.ascontiguousarray(a)


def _params(params: dict) -> list:
    def text(v: Any) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return [(str(k), text(v)) for k, v in params.items()]


def _grid(grid: Optional[Grid]) -> Optional[list]:
    return None if grid is None else [int(g) for g in grid]


@dataclass(frozen=True)
class Selection:
    """What a method kept for one sample.

    Attributes:
        method: the method's name.
        indices: kept token indices into the input, ascending (int64; a torch tensor on the input's device when the
            features were a tensor).
        output: the tokens to hand the decoder, ``[len(indices), D]``: merged rows where the method merges, else the
            kept input rows (float32, or the input tensor's dtype and device).
        merged: True when ``output`` holds merged rows rather than copies of the kept ones.
        sizes: how many input tokens each kept token stands for (all 1 for pure pruning).
        extra: synthetic tokens placed after the kept ones (PruMerge+'s extra token), or None.
        requested: the keep count the budget resolved to.
        clamped: True when ``keep`` exceeded the token count and was lowered to it.
        notes: facts the method recorded (fallbacks taken, adaptive counts).
        elapsed_ms: time in the selector itself.
    """

    method: str
    indices: Any
    output: Any
    merged: bool
    sizes: Any
    extra: Any
    requested: int
    clamped: bool
    notes: list = field(default_factory=list)
    elapsed_ms: float = 0.0

    def __len__(self) -> int:
        return len(self.indices)


def prune(
    features: Any,
    method: str = "todre",
    keep: Optional[int] = None,
    ratio: Optional[float] = None,
    *,
    cls_attn: Any = None,
    keys: Any = None,
    importance: Any = None,
    query: Any = None,
    relevance: Any = None,
    grid: Optional[Grid] = None,
    **params: Any,
) -> Selection:
    """Keep ``keep`` tokens (or the fraction ``ratio``) of one sample's visual tokens ``features [N, D]``.

    Args:
        features: ``[N, D]`` array or tensor (float16/bfloat16/float32/float64).
        method: a name from :func:`methods`, optionally with parameters: ``"todre:pivot=random,seed=3"``.
        keep: tokens to keep (at least 1; more than ``N`` keeps all and sets ``clamped``).
        ratio: fraction of the tokens to keep, in ``(0, 1]``.
        cls_attn: CLS -> patch attention ``[N]`` (ToDRE's pivot, VisionZip, VisPruner, ...).
        keys: ViT keys averaged over heads ``[N, Dk]`` (ToMe, VisionZip's merge, PruMerge+).
        importance: per-token importance ``[N]`` (IDPruner's MMR).
        query: query embeddings ``[T, D]`` in the features' space (LaVida-style ``query``, CDPruner).
        relevance: per-token query relevance ``[N]``.
        grid: ``(F, H, W)`` or ``(V, F, H, W)`` token layout, view-major (video and multi-view methods).
        **params: method parameters (``seed=3``; ``**{"lambda": 0.7}`` for a name that is a Python keyword);
            booleans become ``true``/``false``.

    Returns:
        A :class:`Selection`; the same inputs give the same indices as ``tokensieve prune`` on the command line.

    Raises:
        TokensieveError: bad shapes, NaN or infinities, an unknown method or parameter, a missing signal, a bad budget.
    """
    device = features.device if _is_tensor(features) else None
    out_dtype = features.dtype if _is_tensor(features) else None
    r = _native.prune(
        _float32(features, "features", 2),
        method,
        keep,
        ratio,
        _float32(cls_attn, "cls_attn", 1),
        _float32(keys, "keys", 2),
        _float32(importance, "importance", 1),
        _float32(query, "query", 2),
        _float32(relevance, "relevance", 1),
        _grid(grid),
        _params(params),
    )
    if device is not None:
        torch = _torch()
        back = lambda a: None if a is None else torch.from_numpy(a).to(device=device, dtype=out_dtype)  # noqa: E731
        r["indices"] = torch.from_numpy(r["indices"]).to(device)
        r["sizes"] = torch.from_numpy(r["sizes"]).to(device)
        r["output"] = back(r["output"])
        r["extra"] = back(r["extra"])
    return Selection(**r)


def methods() -> list:
    """Every method: ``name``, ``summary``, ``params`` (name, default, help), ``requires`` and ``uses`` (the
    :func:`prune` keywords of the signals it needs and reads: ``cls_attn``, ``keys``, ``importance``, ``query``,
    ``relevance``, ``grid``), ``exact_budget`` (False for adaptive methods, which keep at most the budget)."""
    return _native.methods()


def retained_count(
    n_tokens: int,
    method: str = "todre",
    keep: Optional[int] = None,
    ratio: Optional[float] = None,
    grid: Optional[Grid] = None,
    *,
    upper_bound: bool = False,
    **params: Any,
) -> int:
    """Rows ``method`` hands the decoder for ``n_tokens`` visual tokens, known before encoding (what a serving
    engine sizes its placeholders with), synthetic rows included.

    Adaptive methods (``exact_budget`` False in :func:`methods`) decide from the data: for them this raises unless
    ``upper_bound=True``, and then returns the most they can keep.
    """
    count, exact = _native.retained_count(n_tokens, method, keep, ratio, _grid(grid), _params(params))
    if not exact and not upper_bound:
        raise TokensieveError(
            f"method `{method}` is adaptive: it keeps at most {count} rows, decided from the data; "
            "pass upper_bound=True to size for that maximum"
        )
    return count


def positions(
    kept: Any,
    grid: Union[int, Grid],
    offset: int = 0,
    mrope: bool = True,
    *,
    temporal_scale: float = 1.0,
) -> Tuple[np.ndarray, int]:
    """Original position ids of the kept tokens of one visual span that starts at position ``offset``.

    Args:
        kept: kept indices into the unpruned span (``Selection.indices``).
        grid: the span's token grid ``(F, H, W)`` as the LLM sees it (after a 2 x 2 merger), or its token count for
            a 1-D decoder.
        offset: the position id of the span's first token.
        mrope: three ids per token (Qwen2-VL and later: temporal, height, width) as transformers' ``get_rope_index``;
            False for one id per token (Llama, Qwen2, LLaVA).
        temporal_scale: the frame-index factor, ``second_per_grid_t * tokens_per_second`` for Qwen2.5-VL videos.

    Returns:
        ``(ids, next)``: ids ``[K]`` (1-D) or ``[3, K]`` (M-RoPE) int64, and the id the text after the span starts
        from, as in the unpruned sequence.
    """
    k = [int(i) for i in (kept.tolist() if hasattr(kept, "tolist") else kept)]
    if isinstance(grid, (int, np.integer)):
        n, g = int(grid), None
    else:
        g = _grid(grid)
        n = int(np.prod(g))
    return _native.positions(k, n, g, int(offset), bool(mrope), float(temporal_scale))


def uniform_indices(n_frames: int, k: int, convention: str = "uniform") -> list:
    """``k`` of ``n_frames`` frame indices: ``uniform`` (lmms-eval's linspace, both ends) or ``interior``
    (VLMEvalKit's ``i * N / (k + 1)``)."""
    return _native.uniform_indices(n_frames, k, convention)


def dcode_frames(embeddings: Any, n: int, uniform_ratio: float = 0.85) -> list:
    """D-CoDe's frame choice from per-frame embeddings ``[F, d]``: a uniform share, then the frames least similar on
    average to those chosen. Returns ``n`` ascending indices."""
    return _native.dcode_frames(_float32(embeddings, "embeddings", 2), n, uniform_ratio)


def f2c_plan(relevance: Any, budget: int = 6272, anchors: int = 8, min_clip: int = 4, smooth: int = 1) -> dict:
    """F2C's key-clip plan from each uniform candidate frame's relevance to the question: ``frames`` (candidate
    indices to encode), ``anchors``, ``clip_len``, ``side`` and ``tokens_per_frame`` (the LLaVA-OneVision resolution
    ladder), ``tokens`` (at most ``budget``)."""
    return _native.f2c_plan(_float32(relevance, "relevance", 1), budget, anchors, min_clip, smooth)


def probe(video: str) -> dict:
    """What the container says about ``video``: ``duration`` (s), ``fps``, ``frames``, ``width``, ``height``,
    ``rotation`` (degrees, applied when decoding)."""
    return _native.probe(str(video))


def sample(video: str, spec: str = "uniform:frames=8") -> Tuple[np.ndarray, list, list]:
    """Decode the frames a sampler picks: ``uniform``, ``uniform-interior``, ``fps`` or ``dcode`` with parameters as
    on the command line (``"fps:rate=0.5,max=32"``).

    Returns:
        ``(frames, timestamps, indices)``: ``[F, H, W, 3]`` uint8 RGB at the video's size, seconds, frame indices.
    """
    return _native.sample(str(video), spec)
