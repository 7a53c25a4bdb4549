"""Greedy k-center (farthest-point) selection over embeddings.

Definition (the reference implements it literally; the fast paths must give the same indices):

- Distances: ``"l2"`` is the Euclidean distance; ``"cosine"`` is ``1 - cos``, computed as the
  squared Euclidean distance of the L2-normalised vectors halved (the same number for unit
  vectors). All comparisons are made on **squared** Euclidean distances
  ``||x||^2 - 2 x.c + ||c||^2`` (clamped at 0) in float32. The implementations sum the dot
  products in different orders, so they agree exactly unless two rows' distances differ by less
  than float32 rounding (about 1e-7 relative); exact duplicates are collapsed first (below).
- **Exact duplicates** (identical rows after normalisation) are one point, represented by their
  lowest index: selection runs over the distinct rows, so the selected indices are distinct
  points and at most the number of distinct rows is returned. (Computed distances of identical
  rows can differ in the last bit between positions of a vectorised product; collapsing them
  first keeps every implementation's choice the same.)
- The first center is ``start`` (default row 0; the lowest index of its duplicates). Each next
  center is the row farthest from its nearest center so far; among equally far rows the
  **lowest index** wins.
- The **covering radius** is the largest distance from any row to its nearest selected center,
  in the metric's units (Euclidean distance, or ``1 - cos``). Each row is **assigned** to its
  nearest center; a row at equal distance from two centers stays with the earlier one. A center
  is at distance exactly 0 from itself (set, not computed: the expansion above rounds).

The numpy fast path updates the nearest-center distances with one matrix-vector product per
center (triangle-inequality pruning was tried and measured slower on text embeddings, whose
distances concentrate). The torch path does the same on a torch device; it is chosen
automatically only for large problems on a CUDA device (on CPU numpy was faster). Memory: the
float32 embeddings plus a normalised (cosine) and a de-duplicated copy. Time: one pass over the
``N x d`` matrix per center, so ``k`` passes in all.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Metric = Literal["cosine", "l2"]

TORCH_MIN_WORK = 5_000_000_000
"""``rows * dim * k`` from which :func:`kcenter` moves to torch on a CUDA device.

A few seconds of numpy work: below it, importing torch and copying the rows costs more than it
saves.
"""


@dataclass(frozen=True)
class KCenterResult:
    """The centers chosen and how well they cover the rows."""

    indices: npt.NDArray[np.int64]
    """Selected rows, in selection order."""
    radius: float
    """Covering radius: the largest distance from a row to its nearest selected center."""
    radii: npt.NDArray[np.float64]
    """``radii[j]``: the covering radius with the first ``j + 1`` centers (non-increasing)."""
    assignment: npt.NDArray[np.int64]
    """For every row, the position in ``indices`` of its nearest center (the earliest on ties)."""
    distances: npt.NDArray[np.float64]
    """For every row, the distance to its nearest center, in the metric's units."""


def _prepare(x: npt.ArrayLike, metric: Metric) -> npt.NDArray[np.float32]:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, d), not shape {arr.shape}")
    if metric == "cosine":
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        arr = arr / np.where(norms > 0, norms, np.float32(1.0))
    elif metric != "l2":
        raise ValueError(f"metric must be 'cosine' or 'l2', not {metric!r}")
    return np.ascontiguousarray(arr)


def _to_metric(sq: float, metric: Metric) -> float:
    return float(sq / 2.0) if metric == "cosine" else float(np.sqrt(sq))


def _to_metric_array(sq: npt.NDArray[np.floating], metric: Metric) -> npt.NDArray[np.float64]:
    sq64 = np.asarray(sq, dtype=np.float64)
    return sq64 / 2.0 if metric == "cosine" else np.sqrt(sq64)


@dataclass(frozen=True)
class _Distinct:
    """The distinct rows of a matrix, in order of first occurrence."""

    rows: npt.NDArray[np.float32]
    first: npt.NDArray[np.int64]  # index of each distinct row's first occurrence (ascending)
    inverse: npt.NDArray[np.int64]  # for every input row, its distinct row
    start: int  # the distinct row of the requested start


def _distinct(x: npt.NDArray[np.float32], k: int, start: int) -> _Distinct:
    n = x.shape[0]
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if n == 0:
        raise ValueError("no rows to select from")
    if not 0 <= start < n:
        raise ValueError(f"start must be a row index in [0, {n}), not {start}")
    keys = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # distinct rows by first occurrence
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    inv = rank[inverse.ravel()].astype(np.int64)
    first_sorted = first[order].astype(np.int64)
    return _Distinct(rows=x[first_sorted], first=first_sorted, inverse=inv, start=int(inv[start]))


def _result(
    dist: _Distinct,
    chosen: npt.NDArray[np.int64],
    radii: npt.NDArray[np.float64],
    assignment: npt.NDArray[np.int64],
    nearest_sq: npt.NDArray[np.floating],
    metric: Metric,
) -> KCenterResult:
    return KCenterResult(
        indices=dist.first[chosen],
        radius=float(radii[-1]),
        radii=radii,
        assignment=assignment[dist.inverse],
        distances=_to_metric_array(nearest_sq, metric)[dist.inverse],
    )


def kcenter_reference(
    embeddings: npt.ArrayLike, k: int, metric: Metric = "cosine", start: int = 0
) -> KCenterResult:
    """Greedy k-center with a Python loop over rows (the definition).

    Args:
        embeddings: Array of shape ``(N, d)``.
        k: Number of centers (at most the number of distinct rows are returned).
        metric: ``"cosine"`` or ``"l2"``.
        start: Index of the first center.

    Returns:
        The :class:`KCenterResult`.
    """
    dist = _distinct(_prepare(embeddings, metric), k, start)
    x = dist.rows
    n = x.shape[0]
    sqnorm = [np.dot(row, row) for row in x]
    nearest = [np.float32(np.inf)] * n
    assignment = [0] * n
    chosen: list[int] = []
    radii: list[float] = []
    center = dist.start
    for j in range(min(k, n)):
        chosen.append(center)
        c = x[center]
        for i in range(n):
            d = max(sqnorm[i] - np.float32(2.0) * np.dot(x[i], c) + sqnorm[center], np.float32(0))
            if d < nearest[i]:
                nearest[i] = d
                assignment[i] = j
        nearest[center] = np.float32(0.0)  # exactly, whatever the rounding of the expansion
        assignment[center] = j
        far, far_d = 0, nearest[0]
        for i in range(1, n):
            if nearest[i] > far_d:
                far, far_d = i, nearest[i]
        radii.append(_to_metric(float(far_d), metric))
        center = far
    return _result(
        dist,
        np.array(chosen, dtype=np.int64),
        np.array(radii, dtype=np.float64),
        np.array(assignment, dtype=np.int64),
        np.array(nearest, dtype=np.float32),
        metric,
    )


def kcenter_numpy(
    embeddings: npt.ArrayLike, k: int, metric: Metric = "cosine", start: int = 0
) -> KCenterResult:
    """Greedy k-center, vectorised numpy (one matrix-vector product per center)."""
    dist = _distinct(_prepare(embeddings, metric), k, start)
    x = dist.rows
    n = x.shape[0]
    sqnorm = np.einsum("ij,ij->i", x, x)
    nearest = np.full(n, np.inf, dtype=np.float32)
    assignment = np.zeros(n, dtype=np.int64)
    chosen = np.empty(min(k, n), dtype=np.int64)
    radii = np.empty(chosen.size, dtype=np.float64)
    center = dist.start
    for j in range(chosen.size):
        chosen[j] = center
        d = sqnorm - np.float32(2.0) * (x @ x[center]) + sqnorm[center]
        np.maximum(d, np.float32(0.0), out=d)
        closer = d < nearest
        nearest[closer] = d[closer]
        assignment[closer] = j
        nearest[center] = 0.0
        assignment[center] = j
        center = int(np.argmax(nearest))  # first maximum: the lowest index among ties
        radii[j] = _to_metric(float(nearest[center]), metric)
    return _result(dist, chosen, radii, assignment, nearest, metric)


def kcenter_torch(
    embeddings: npt.ArrayLike,
    k: int,
    metric: Metric = "cosine",
    start: int = 0,
    device: str | None = None,
) -> KCenterResult:
    """Greedy k-center with torch (on ``device``: default CUDA if available, else CPU).

    Raises:
        ImportError: torch is not installed.
    """
    import torch

    dist = _distinct(_prepare(embeddings, metric), k, start)
    n = dist.rows.shape[0]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = torch.from_numpy(dist.rows).to(dev)
    sqnorm = (x * x).sum(dim=1)
    nearest = torch.full((n,), float("inf"), dtype=torch.float32, device=dev)
    assignment = torch.zeros(n, dtype=torch.int64, device=dev)
    chosen: list[int] = []
    radii: list[float] = []
    center = dist.start
    for j in range(min(k, n)):
        chosen.append(center)
        d = (sqnorm - 2.0 * (x @ x[center]) + sqnorm[center]).clamp_min_(0.0)
        closer = d < nearest
        nearest = torch.where(closer, d, nearest)
        assignment.masked_fill_(closer, j)
        nearest[center] = 0.0
        assignment[center] = j
        # torch.argmax returns the first maximal index (documented), as numpy does.
        center = int(torch.argmax(nearest).item())
        radii.append(_to_metric(float(nearest[center].item()), metric))
    return _result(
        dist,
        np.array(chosen, dtype=np.int64),
        np.array(radii, dtype=np.float64),
        assignment.cpu().numpy(),
        nearest.cpu().numpy(),
        metric,
    )


def torch_available() -> bool:
    """Whether torch can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def kcenter(
    embeddings: npt.ArrayLike,
    k: int,
    metric: Metric = "cosine",
    start: int = 0,
    backend: Literal["auto", "numpy", "torch"] = "auto",
    device: str | None = None,
) -> KCenterResult:
    """Greedy k-center: the fast path (same indices as :func:`kcenter_reference`).

    Args:
        embeddings: Array of shape ``(N, d)``.
        k: Number of centers (at most ``N`` are returned).
        metric: ``"cosine"`` or ``"l2"``.
        start: Index of the first center.
        backend: ``"numpy"``, ``"torch"``, or ``"auto"``: torch when a CUDA device is
            available and ``N * d * k`` reaches :data:`TORCH_MIN_WORK`, else numpy (on CPU,
            numpy's product measured faster than torch's here: 1.4 s against 3.9 s for
            20,000 x 512 rows and k = 1,000).
        device: torch device for the torch backend.

    Returns:
        The :class:`KCenterResult`.
    """
    if backend == "torch":
        return kcenter_torch(embeddings, k, metric, start, device)
    if backend == "auto":
        shape: Any = np.shape(embeddings)
        work = int(shape[0]) * int(shape[1] if len(shape) > 1 else 1) * k
        if work >= TORCH_MIN_WORK and _cuda_available():
            return kcenter_torch(embeddings, k, metric, start, device)
    return kcenter_numpy(embeddings, k, metric, start)


def _cuda_available() -> bool:
    if not torch_available():
        return False
    import torch

    return bool(torch.cuda.is_available())


__all__ = [
    "KCenterResult",
    "Metric",
    "kcenter",
    "kcenter_numpy",
    "kcenter_reference",
    "kcenter_torch",
    "torch_available",
]
