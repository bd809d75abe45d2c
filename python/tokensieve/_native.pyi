"""Type stubs of the Rust extension; the documented interface is `tokensieve` (``__init__.py``)."""

from typing import Any, Optional

import numpy as np
import numpy.typing as npt

__version__: str

class TokensieveError(ValueError): ...

def prune(
    features: npt.NDArray[np.float32],
    method_spec: str,
    keep: Optional[int],
    ratio: Optional[float],
    cls_attn: Optional[npt.NDArray[np.float32]],
    keys: Optional[npt.NDArray[np.float32]],
    importance: Optional[npt.NDArray[np.float32]],
    query: Optional[npt.NDArray[np.float32]],
    relevance: Optional[npt.NDArray[np.float32]],
    grid: Optional[list[int]],
    params: list[tuple[str, str]],
) -> dict[str, Any]: ...
def methods() -> list[dict[str, Any]]: ...
def retained_count(
    n_tokens: int,
    method_spec: str,
    keep: Optional[int],
    ratio: Optional[float],
    grid: Optional[list[int]],
    params: list[tuple[str, str]],
) -> tuple[int, bool]: ...
def positions(
    kept: list[int], n_tokens: int, grid: Optional[list[int]], offset: int, mrope: bool, temporal_scale: float
) -> tuple[npt.NDArray[np.int64], int]: ...
def uniform_indices(n_frames: int, k: int, convention: str) -> list[int]: ...
def dcode_frames(embeddings: npt.NDArray[np.float32], n: int, uniform_ratio: float) -> list[int]: ...
def f2c_plan(
    relevance: npt.NDArray[np.float32], budget: int, anchors: int, min_clip: int, smooth: int
) -> dict[str, Any]: ...
def sample(path: str, spec: str) -> tuple[npt.NDArray[np.uint8], list[float], list[int]]: ...
def probe(path: str) -> dict[str, Any]: ...
