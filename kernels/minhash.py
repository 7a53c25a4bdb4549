"""MinHash signatures of texts over character n-grams.

Definition (the reference implements it literally, the fast path must match it bit for bit):

1. **Normalise** a text: Unicode NFKC, ``casefold()``, every run of whitespace collapsed to
   one space, leading and trailing whitespace removed (:func:`normalize`). NFKC also folds
   full-width forms, so ``"？"`` and ``"?"`` are the same character.
2. **Shingle** it into overlapping character n-grams (code points, so Chinese works the same way
   as English). A text shorter than ``n`` characters is one shingle, the whole text; an empty
   text has no shingles.
3. **Hash** each shingle to 32 bits, deterministically across processes and machines (never
   Python's salted ``hash()``): FNV-1a over the code points (one 64-bit step per code point),
   then the splitmix64 finaliser, then the low 32 bits (:func:`shingle_hash`).
4. **Permute** with ``num_perm`` universal hash functions ``h_i(x) = (a_i * x + b_i) mod p``,
   ``p = 2**61 - 1`` (a Mersenne prime), ``1 <= a_i < p``, ``0 <= b_i < p``, derived from
   ``seed`` with BLAKE2b (:func:`permutations`), so they are the same on every numpy version.
5. The signature is, per permutation, the minimum of ``h_i`` over the text's shingles: a 61-bit
   value (``bits=64``, dtype uint64) or, with ``bits=32``, the minimum of the low 32 bits of
   ``h_i`` (dtype uint32: half the memory, the same Jaccard estimate up to a 2**-32 collision
   rate). A text without shingles gets the all-ones sentinel of the dtype.

The fraction of equal signature entries of two texts estimates the Jaccard similarity of their
shingle sets, with a standard error of about ``sqrt(J * (1 - J) / num_perm)``.

The fast path (:func:`minhash`) is vectorised numpy: all shingles of a batch hashed at once, the
permutations applied to blocks of shingles with 64-bit integer arithmetic (the 93-bit products
``a * x`` are reduced modulo the Mersenne prime by splitting ``a`` at 32 bits) and the minimum
taken per text with ``np.minimum.reduceat``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

MERSENNE_61 = (1 << 61) - 1
"""The prime modulus of the permutations."""

_MASK32 = (1 << 32) - 1
_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_BLOCK = 256  # shingles per block of the fast path: temporaries of 256 x 128 x 8 B stay in cache

Bits = Literal[32, 64]


def normalize(text: str) -> str:
    """NFKC, casefold and collapse whitespace (step 1 of the module docstring)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def shingles(text: str, n: int = 5) -> list[str]:
    """The character n-grams of the normalised text, in order (with repeats).

    Args:
        text: Any text.
        n: Shingle length in characters (code points).

    Returns:
        The n-grams; the whole normalised text if it is shorter than ``n``; nothing if it is empty.
    """
    _check_n(n)
    norm = normalize(text)
    if not norm:
        return []
    if len(norm) < n:
        return [norm]
    return [norm[i : i + n] for i in range(len(norm) - n + 1)]


def shingle_hash(shingle: str) -> int:
    """The stable 32-bit hash of one shingle (step 3 of the module docstring)."""
    h = _FNV_OFFSET
    for ch in shingle:
        h = ((h ^ ord(ch)) * _FNV_PRIME) & _MASK64
    h ^= h >> 30
    h = (h * _MIX1) & _MASK64
    h ^= h >> 27
    h = (h * _MIX2) & _MASK64
    h ^= h >> 31
    return h & _MASK32


def permutations(num_perm: int = 128, seed: int = 1) -> tuple[list[int], list[int]]:
    """The coefficients ``(a, b)`` of the ``num_perm`` permutations for ``seed``.

    Derived with BLAKE2b from ``(seed, i)``, so they never depend on a random number generator's
    version.
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be at least 1, not {num_perm}")
    a: list[int] = []
    b: list[int] = []
    for i in range(num_perm):
        digest = hashlib.blake2b(f"assay-minhash:{seed}:{i}".encode(), digest_size=16).digest()
        a.append(int.from_bytes(digest[:8], "little") % (MERSENNE_61 - 1) + 1)
        b.append(int.from_bytes(digest[8:], "little") % MERSENNE_61)
    return a, b


def minhash_reference(
    texts: Sequence[str], n: int = 5, num_perm: int = 128, seed: int = 1, bits: Bits = 64
) -> npt.NDArray[np.unsignedinteger]:
    """MinHash signatures computed with plain Python loops and integers (the definition).

    Args:
        texts: The texts.
        n: Shingle length in characters.
        num_perm: Number of permutations (signature length).
        seed: Seed of the permutations; signatures are comparable only under the same seed.
        bits: 64 for full 61-bit values (uint64), 32 for the low 32 bits (uint32).

    Returns:
        Array of shape ``(len(texts), num_perm)``, dtype uint64 or uint32.
    """
    _check_n(n)
    _check_bits(bits)
    a, b = permutations(num_perm, seed)
    mask = _MASK32 if bits == 32 else _MASK64
    dtype = np.uint32 if bits == 32 else np.uint64
    out = np.full((len(texts), num_perm), np.iinfo(dtype).max, dtype=dtype)
    for row, text in enumerate(texts):
        hashes = {shingle_hash(s) for s in shingles(text, n)}
        if not hashes:
            continue
        for i in range(num_perm):
            out[row, i] = min(((a[i] * x + b[i]) % MERSENNE_61) & mask for x in hashes)
    return out


def minhash(
    texts: Sequence[str], n: int = 5, num_perm: int = 128, seed: int = 1, bits: Bits = 64
) -> npt.NDArray[np.unsignedinteger]:
    """MinHash signatures, vectorised with numpy; equal to :func:`minhash_reference`.

    Args:
        texts: The texts.
        n: Shingle length in characters.
        num_perm: Number of permutations (signature length).
        seed: Seed of the permutations; signatures are comparable only under the same seed.
        bits: 64 for full 61-bit values (uint64), 32 for the low 32 bits (uint32, half the
            memory: ``4 * num_perm`` bytes per text).

    Returns:
        Array of shape ``(len(texts), num_perm)``, dtype uint64 or uint32.
    """
    _check_n(n)
    _check_bits(bits)
    hashes, owner = shingle_hashes(texts, n)
    a_list, b_list = permutations(num_perm, seed)
    a = np.array(a_list, dtype=np.uint64)
    b = np.array(b_list, dtype=np.uint64)
    dtype = np.uint32 if bits == 32 else np.uint64
    sentinel = np.iinfo(np.uint64).max if bits == 64 else np.uint64(_MASK32)
    out = np.full((len(texts), num_perm), sentinel, dtype=np.uint64)
    if hashes.size:
        _apply_permutations(hashes, owner, a, b, bits, out)
    return out.astype(dtype, copy=False)


def shingle_hashes(
    texts: Sequence[str], n: int = 5
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """The 32-bit hashes (as uint64) of every shingle of every text, vectorised.

    Args:
        texts: The texts.
        n: Shingle length in characters.

    Returns:
        ``(hashes, owner)``: the hashes in text order, and for each the index of its text
        (non-decreasing). Texts without shingles own none.
    """
    _check_n(n)
    norms = [normalize(t) for t in texts]
    lengths = np.fromiter((len(s) for s in norms), dtype=np.int64, count=len(norms))
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    owner = np.repeat(np.arange(len(norms), dtype=np.int64), counts)
    if owner.size == 0:
        return np.zeros(0, dtype=np.uint64), owner
    joined = "".join(norms)
    cps = np.frombuffer(joined.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32).astype(
        np.uint64
    )
    starts = np.zeros(len(norms), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    # Position of each shingle's first character in `cps`.
    first = np.repeat(starts, counts) + (
        np.arange(owner.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    width = np.minimum(lengths, n)[owner]  # characters per shingle (< n for short texts)
    prime = np.uint64(_FNV_PRIME)
    h = np.empty(owner.size, dtype=np.uint64)
    full = width == n
    if cps.size >= n:
        # FNV-1a of the n-gram starting at every position of the joined text (contiguous slices,
        # no gathers), then the positions that start a shingle of some text.
        span = cps.size - n + 1
        rolling = np.full(span, _FNV_OFFSET, dtype=np.uint64)
        for k in range(n):
            rolling ^= cps[k : k + span]
            rolling *= prime
        h[full] = rolling[first[full]]
    short = np.flatnonzero(~full)  # whole-text shingles of texts shorter than n
    if short.size:
        hs = np.full(short.size, _FNV_OFFSET, dtype=np.uint64)
        for k in range(n - 1):
            live = np.flatnonzero(width[short] > k)
            hs[live] = (hs[live] ^ cps[first[short[live]] + k]) * prime
        h[short] = hs
    h ^= h >> np.uint64(30)
    h *= np.uint64(_MIX1)
    h ^= h >> np.uint64(27)
    h *= np.uint64(_MIX2)
    h ^= h >> np.uint64(31)
    h &= np.uint64(_MASK32)
    return h, owner


def _apply_permutations(
    hashes: npt.NDArray[np.uint64],
    owner: npt.NDArray[np.int64],
    a: npt.NDArray[np.uint64],
    b: npt.NDArray[np.uint64],
    bits: int,
    out: npt.NDArray[np.uint64],
) -> None:
    """Takes the per-text minima of the permuted hashes into ``out`` (block by block)."""
    p = np.uint64(MERSENNE_61)
    a_hi = a >> np.uint64(32)  # < 2**29
    a_lo = a & np.uint64(_MASK32)
    m = min(_BLOCK, hashes.size)
    t = np.empty((m, a.size), dtype=np.uint64)
    u = np.empty_like(t)
    v = np.empty_like(t)
    for lo in range(0, hashes.size, _BLOCK):
        hi = min(lo + _BLOCK, hashes.size)
        x = hashes[lo:hi, None]
        tb, ub, vb = t[: hi - lo], u[: hi - lo], v[: hi - lo]
        # (a * x) mod p with a = a_hi * 2**32 + a_lo and x < 2**32, using 2**61 = 1 (mod p):
        # c = a_hi * x < 2**61 and c * 2**32 = ((c << 32) mod 2**64 & p) + (c >> 29) (mod p);
        # d = a_lo * x < 2**64 and d = (d & p) + (d >> 61) (mod p).
        np.multiply(x, a_hi, out=tb)
        np.right_shift(tb, np.uint64(29), out=ub)
        tb <<= np.uint64(32)
        tb &= p
        tb += ub
        np.multiply(x, a_lo, out=ub)
        np.bitwise_and(ub, p, out=vb)
        tb += vb
        ub >>= np.uint64(61)
        tb += ub
        tb += b  # < 2**63 in all: no overflow
        np.bitwise_and(tb, p, out=ub)
        tb >>= np.uint64(61)
        tb += ub  # < p + 4
        np.subtract(tb, p, out=ub)  # wraps to a huge value where tb < p
        np.minimum(tb, ub, out=tb)
        if bits == 32:
            tb &= np.uint64(_MASK32)
        own = owner[lo:hi]
        seg = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
        rows = own[seg]
        # A text's shingles may span two blocks: combine with what the earlier block found.
        out[rows] = np.minimum(out[rows], np.minimum.reduceat(tb, seg, axis=0))


def jaccard_estimate(sig_a: npt.NDArray[np.generic], sig_b: npt.NDArray[np.generic]) -> float:
    """The fraction of equal entries of two signatures: the MinHash estimate of Jaccard."""
    return float(np.mean(np.asarray(sig_a) == np.asarray(sig_b)))


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"the shingle length n must be at least 1, not {n}")


def _check_bits(bits: int) -> None:
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, not {bits}")


__all__ = [
    "MERSENNE_61",
    "jaccard_estimate",
    "minhash",
    "minhash_reference",
    "normalize",
    "permutations",
    "shingle_hash",
    "shingle_hashes",
    "shingles",
]
