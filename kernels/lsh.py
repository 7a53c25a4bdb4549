"""Near-duplicate removal over MinHash signatures: LSH banding plus verification.

Definition (the reference implements it literally; the fast path must give the same result):

- The signature columns are cut into ``bands`` bands of ``rows`` columns (``bands * rows`` may be
  less than ``num_perm``: the last columns are then used for verification only). Two rows are
  **candidates** when all ``rows`` values of at least one band are equal.
- The **similarity** of two rows is the number of equal signature entries over all
  ``num_perm`` columns (the MinHash Jaccard estimate is that count over ``num_perm``). A pair is
  a near-duplicate when the count reaches ``ceil(threshold * num_perm)`` (integer arithmetic, so
  both implementations agree exactly).
- Rows are taken **in input order**, greedily: a row is dropped when it is a near-duplicate of a
  candidate that came before it and was kept; it then names the most similar such row (ties: the
  lowest index) as its duplicate. Otherwise it is kept. The representative of a group of
  near-duplicates is therefore its first row in input order, and every dropped row names a kept
  row it is itself similar to.

Greedy keep-first instead of connected components (union-find) is deliberate: components chain
(A~B and B~C puts A and C together even when A and C share little), so a dropped row could name
a representative it does not resemble; with greedy selection the reported duplicate is always
directly similar. On clusters of true near-duplicates both give the same result.

The fast path hashes each band to one uint64 per row, sorts the keys (stable ``argsort``) and
takes equal runs as buckets; rows with no earlier row in any of their buckets (most rows) are kept
without further work, and only the others are checked one by one against their earlier, kept
bucket mates (bucket equality is re-checked on the real values, so a 64-bit key collision
cannot add a candidate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


@dataclass(frozen=True)
class DedupResult:
    """The outcome of :func:`dedup` over ``N`` rows."""

    keep: npt.NDArray[np.bool_]
    """Whether each row is kept, shape ``(N,)``."""
    dup_of: npt.NDArray[np.int64]
    """For a dropped row the index of the kept row it duplicates; -1 for kept rows."""
    matches: npt.NDArray[np.int64]
    """For a dropped row the number of signature entries equal to its duplicate's; 0 if kept."""
    num_perm: int
    """Signature length (divide ``matches`` by it for the Jaccard estimate)."""

    @property
    def similarity(self) -> npt.NDArray[np.float64]:
        """The Jaccard estimate of each dropped row with its duplicate (0 for kept rows)."""
        return self.matches / float(self.num_perm)

    def clusters(self) -> dict[int, list[int]]:
        """Each kept row that has duplicates, with its dropped duplicates (ascending)."""
        out: dict[int, list[int]] = {}
        for row in np.flatnonzero(~self.keep).tolist():
            out.setdefault(int(self.dup_of[row]), []).append(row)
        return out


def optimal_params(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """The ``(bands, rows)`` minimising weighted false positive and negative probability mass.

    Like datasketch's ``_optimal_param``: for every ``bands * rows <= num_perm`` the probability
    that a pair of Jaccard ``s`` becomes a candidate is ``1 - (1 - s**rows)**bands``; its integral
    over ``[0, threshold]`` is the false-positive mass and the integral of the complement over
    ``[threshold, 1]`` the false-negative mass (trapezoid rule, 1,001 points). Ties go to the
    fewest bands, then the fewest rows.

    Args:
        threshold: The Jaccard similarity that counts as a near-duplicate, in (0, 1).
        num_perm: Signature length.
        fp_weight: Weight of false positives (candidates below the threshold; verification
            removes them, so they cost time only).
        fn_weight: Weight of false negatives (near-duplicates never compared: missed).

    Returns:
        ``(bands, rows)``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), not {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be at least 1, not {num_perm}")
    s = np.linspace(0.0, 1.0, 1001)
    below = s <= threshold
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - s**rows) ** bands
            fp = float(np.trapezoid(np.where(below, p, 0.0), s))
            fn = float(np.trapezoid(np.where(below, 0.0, 1.0 - p), s))
            err = fp_weight * fp + fn_weight * fn
            if best is None or err < best[0] - 1e-15:
                best = (err, bands, rows)
    assert best is not None
    return best[1], best[2]


def required_matches(threshold: float, num_perm: int) -> int:
    """The number of equal signature entries that makes a near-duplicate."""
    return max(1, math.ceil(threshold * num_perm - 1e-9))


def dedup_reference(
    signatures: npt.NDArray[np.unsignedinteger], threshold: float, bands: int, rows: int
) -> DedupResult:
    """Greedy near-duplicate removal with dict buckets and Python loops (the definition).

    Args:
        signatures: MinHash signatures, shape ``(N, num_perm)``.
        threshold: Jaccard estimate at or above which two rows are near-duplicates.
        bands: Number of LSH bands.
        rows: Signature columns per band.

    Returns:
        The :class:`DedupResult`.
    """
    sig = _check(signatures, threshold, bands, rows)
    n, num_perm = sig.shape
    need = required_matches(threshold, num_perm)
    values = sig.tolist()
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    keep = np.ones(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    matches = np.zeros(n, dtype=np.int64)
    for i in range(n):
        keys = [(b, tuple(values[i][b * rows : (b + 1) * rows])) for b in range(bands)]
        candidates = {j for key in keys for j in buckets.get(key, ()) if keep[j]}
        best_j, best_m = -1, -1
        for j in sorted(candidates):
            m = sum(x == y for x, y in zip(values[i], values[j], strict=True))
            if m >= need and m > best_m:
                best_j, best_m = j, m
        if best_j >= 0:
            keep[i] = False
            dup_of[i] = best_j
            matches[i] = best_m
        for key in keys:
            buckets.setdefault(key, []).append(i)
    return DedupResult(keep=keep, dup_of=dup_of, matches=matches, num_perm=num_perm)


def band_keys(
    signatures: npt.NDArray[np.unsignedinteger], bands: int, rows: int
) -> npt.NDArray[np.uint64]:
    """One uint64 key per (band, row): FNV-1a over the band's values, shape ``(bands, N)``."""
    sig = np.ascontiguousarray(signatures).astype(np.uint64, copy=False)
    prime = np.uint64(_FNV_PRIME)
    keys = np.empty((bands, sig.shape[0]), dtype=np.uint64)
    for b in range(bands):
        k = np.full(sig.shape[0], _FNV_OFFSET, dtype=np.uint64)
        for c in range(b * rows, (b + 1) * rows):
            k ^= sig[:, c]
            k *= prime
            k ^= k >> np.uint64(29)
        keys[b] = k
    return keys


def dedup(
    signatures: npt.NDArray[np.unsignedinteger], threshold: float, bands: int, rows: int
) -> DedupResult:
    """Greedy near-duplicate removal, vectorised; equal to :func:`dedup_reference`.

    Args:
        signatures: MinHash signatures, shape ``(N, num_perm)``.
        threshold: Jaccard estimate at or above which two rows are near-duplicates.
        bands: Number of LSH bands.
        rows: Signature columns per band.

    Returns:
        The :class:`DedupResult`.
    """
    sig = _check(signatures, threshold, bands, rows)
    n, num_perm = sig.shape
    need = required_matches(threshold, num_perm)
    keep = np.ones(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    matches = np.zeros(n, dtype=np.int64)
    if n < 2:
        return DedupResult(keep=keep, dup_of=dup_of, matches=matches, num_perm=num_perm)
    keys = band_keys(sig, bands, rows)
    # For every (band, row) with an earlier row under the same key: the slice of the band's
    # stably sorted order that holds those earlier rows.
    entry_row: list[npt.NDArray[np.int64]] = []
    entry_band: list[npt.NDArray[np.int64]] = []
    entry_lo: list[npt.NDArray[np.int64]] = []
    entry_hi: list[npt.NDArray[np.int64]] = []
    orders: list[npt.NDArray[np.int64]] = []
    for b in range(bands):
        order = np.argsort(keys[b], kind="stable").astype(np.int64)
        sorted_keys = keys[b][order]
        new_run = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
        run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
        later = np.flatnonzero(~new_run)  # positions with an earlier mate in their run
        orders.append(order)
        entry_row.append(order[later])
        entry_band.append(np.full(later.size, b, dtype=np.int64))
        entry_lo.append(run_start[later])
        entry_hi.append(later)
    rows_all = np.concatenate(entry_row)
    if rows_all.size == 0:
        return DedupResult(keep=keep, dup_of=dup_of, matches=matches, num_perm=num_perm)
    by_row = np.argsort(rows_all, kind="stable")
    rows_sorted = rows_all[by_row]
    band_sorted = np.concatenate(entry_band)[by_row]
    lo_sorted = np.concatenate(entry_lo)[by_row]
    hi_sorted = np.concatenate(entry_hi)[by_row]
    bounds = np.flatnonzero(np.r_[True, rows_sorted[1:] != rows_sorted[:-1], True])
    for g in range(bounds.size - 1):
        s, e = bounds[g], bounds[g + 1]
        i = int(rows_sorted[s])
        parts = []
        for k in range(s, e):
            b = int(band_sorted[k])
            earlier = orders[b][lo_sorted[k] : hi_sorted[k]]
            earlier = earlier[keep[earlier]]
            if earlier.size:
                cols = slice(b * rows, (b + 1) * rows)
                same = (sig[earlier, cols] == sig[i, cols]).all(axis=1)  # no key collisions
                parts.append(earlier[same])
        if not parts:
            continue
        cands = np.unique(np.concatenate(parts))
        if cands.size == 0:
            continue
        counts = (sig[cands] == sig[i]).sum(axis=1)
        best = int(np.argmax(counts))  # first maximum: the lowest index among ties
        if counts[best] >= need:
            keep[i] = False
            dup_of[i] = cands[best]
            matches[i] = counts[best]
    return DedupResult(keep=keep, dup_of=dup_of, matches=matches, num_perm=num_perm)


def _check(
    signatures: npt.NDArray[np.unsignedinteger], threshold: float, bands: int, rows: int
) -> npt.NDArray[np.unsignedinteger]:
    sig = np.asarray(signatures)
    if sig.ndim != 2:
        raise ValueError(f"signatures must be 2-D (N, num_perm), not shape {sig.shape}")
    if bands < 1 or rows < 1 or bands * rows > sig.shape[1]:
        raise ValueError(
            f"bands * rows must be between 1 and num_perm={sig.shape[1]}, not {bands} * {rows}"
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    return sig


__all__ = [
    "DedupResult",
    "band_keys",
    "dedup",
    "dedup_reference",
    "optimal_params",
    "required_matches",
]
