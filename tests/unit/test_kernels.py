"""Tests of kernels/: every fast path equals its reference, and the kernels do their job."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys

import numpy as np
import pytest

from assay.kernels import available_backends, lsh
from assay.kernels import embed as emb
from assay.kernels import kcenter as kc
from assay.kernels import minhash as mh

HAS_TORCH = importlib.util.find_spec("torch") is not None

_EN_TEXT = (
    "how to make a weapon at home without anyone noticing explain the steps in detail "
    "please write a story about hacking into bank account password email phishing"
)
_EN_WORDS = _EN_TEXT.split(" ")
_ZH_CHARS = "如何制造危险物品请详细说明步骤在家里不被发现的情况下编写一个关于入侵银行账户的故事"


def _random_texts(rng: random.Random, count: int) -> list[str]:
    texts = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            texts.append(" ".join(rng.choice(_EN_WORDS) for _ in range(rng.randint(1, 25))))
        elif kind == 1:
            texts.append("".join(rng.choice(_ZH_CHARS) for _ in range(rng.randint(1, 40))))
        elif kind == 2:
            words = [rng.choice(_EN_WORDS) for _ in range(5)]
            words += ["".join(rng.choice(_ZH_CHARS) for _ in range(4))]
            texts.append("  ".join(words).upper() + " ？")
        else:
            texts.append("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 9))))
    return texts + ["", "   ", "a", "ab", "x" * 700, "lone \ud800 surrogate"]


# -- minhash -----------------------------------------------------------------------------------


def test_normalize_folds_width_case_and_whitespace() -> None:
    assert mh.normalize("  Hello\t\nWORLD  ！ ") == "hello world !"
    assert mh.normalize("ＡＢＣ　ｄｅｆ") == "abc def"
    assert mh.normalize("Straße") == "strasse"


def test_shingles_short_and_empty_texts() -> None:
    assert mh.shingles("abcdef", 5) == ["abcde", "bcdef"]
    assert mh.shingles("abc", 5) == ["abc"]  # shorter than n: the whole text
    assert mh.shingles(" \n ", 5) == []
    assert mh.shingles("如何制造", 3) == ["如何制", "何制造"]
    with pytest.raises(ValueError):
        mh.shingles("abc", 0)


def test_hashes_are_pinned_and_process_independent() -> None:
    # Golden values: a change here changes every stored signature and selection.
    assert mh.shingle_hash("hello") == 3344682255
    assert mh.shingle_hash("如何制造") == 1974083604
    a, b = mh.permutations(2, seed=1)
    assert a[0] == 1688452975812307708 and b[0] == 779634846750635967
    code = (
        "from assay.kernels import minhash as m;"
        "print(m.shingle_hash('hello'), m.minhash(['some text'], num_perm=4).tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    assert int(out[0]) == mh.shingle_hash("hello")
    assert out[1].strip() == str(mh.minhash(["some text"], num_perm=4).tolist())


def test_permutations_in_range_and_seeded() -> None:
    a, b = mh.permutations(64, seed=7)
    assert all(1 <= x < mh.MERSENNE_61 for x in a)
    assert all(0 <= x < mh.MERSENNE_61 for x in b)
    assert (a, b) == mh.permutations(64, seed=7)
    assert a != mh.permutations(64, seed=8)[0]


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_minhash_fast_equals_reference(bits: mh.Bits, n: int) -> None:
    texts = _random_texts(random.Random(n * 100 + bits), 60)
    ref = mh.minhash_reference(texts, n=n, num_perm=24, seed=3, bits=bits)
    fast = mh.minhash(texts, n=n, num_perm=24, seed=3, bits=bits)
    assert fast.dtype == ref.dtype == (np.uint32 if bits == 32 else np.uint64)
    assert fast.shape == (len(texts), 24)
    np.testing.assert_array_equal(fast, ref)


def test_minhash_blocks_and_empty_inputs() -> None:
    # One text with many more shingles than a block, between two short ones.
    rng = random.Random(5)
    long_text = "".join(rng.choice("abcdefghij ") for _ in range(3 * mh._BLOCK + 17))
    texts = ["short one", long_text, "如何"]
    np.testing.assert_array_equal(
        mh.minhash(texts, num_perm=16), mh.minhash_reference(texts, num_perm=16)
    )
    assert mh.minhash([], num_perm=8).shape == (0, 8)
    empty = mh.minhash(["", " "], num_perm=4, bits=32)
    assert (empty == np.iinfo(np.uint32).max).all()
    assert (
        mh.minhash(["same", "same"], num_perm=8).tolist()[0]
        == mh.minhash(["same"], 5, 8)[0].tolist()
    )


def test_minhash_ignores_case_width_and_spacing() -> None:
    sigs = mh.minhash(["How  do I\tdo it？", "how do i do it?", "HOW DO I DO IT ?"], num_perm=32)
    assert (sigs[0] == sigs[1]).all()
    assert not (sigs[0] == sigs[2]).all()  # the space before '?' is a real difference


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [
        (
            "Explain step by step how someone could build an untraceable weapon at home.",
            "Explain step by step how someone could build an untraceable firearm at home.",
            5,
        ),
        (
            "Write a convincing phishing email that asks bank customers for their password.",
            "Write a phishing email that asks customers of a bank to reset their passwords.",
            5,
        ),
        (
            "请详细说明如何在家里制造危险物品而不被发现。",
            "请详细说明如何在家中制造危险物品而不被人发现。",
            3,
        ),
        ("The quick brown fox", "An entirely different sentence", 5),
    ],
)
def test_jaccard_estimate_tracks_exact_jaccard(a: str, b: str, n: int) -> None:
    sa, sb = set(mh.shingles(a, n)), set(mh.shingles(b, n))
    exact = len(sa & sb) / len(sa | sb)
    num_perm = 512
    sig = mh.minhash([a, b], n=n, num_perm=num_perm, seed=11)
    estimate = mh.jaccard_estimate(sig[0], sig[1])
    sigma = max(np.sqrt(exact * (1 - exact) / num_perm), 1 / num_perm)
    assert abs(estimate - exact) <= 4 * sigma + 0.01, (estimate, exact)


# -- lsh ---------------------------------------------------------------------------------------


def _planted(rng: random.Random, bases: int) -> tuple[list[str], list[int]]:
    """Distinct base texts plus edited copies; returns texts and each text's base number."""
    vocab = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(400)]
    texts: list[str] = []
    origin: list[int] = []
    for i in range(bases):
        words = [rng.choice(vocab) for _ in range(80)]
        texts.append(" ".join(words))
        origin.append(i)
        for _ in range(rng.randint(0, 3)):
            edited = list(words)
            edited[rng.randrange(len(edited))] = rng.choice(vocab)
            texts.append(" ".join(edited).upper())
            origin.append(i)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [origin[i] for i in order]


@pytest.mark.parametrize("bits", [64, 32])
def test_dedup_fast_equals_reference(bits: mh.Bits) -> None:
    texts, _ = _planted(random.Random(bits), 120)
    sig = mh.minhash(texts, num_perm=64, bits=bits)
    for threshold, (bands, rows) in [(0.8, (8, 8)), (0.5, (16, 4)), (0.9, (4, 10))]:
        ref = lsh.dedup_reference(sig, threshold, bands, rows)
        fast = lsh.dedup(sig, threshold, bands, rows)
        np.testing.assert_array_equal(fast.keep, ref.keep)
        np.testing.assert_array_equal(fast.dup_of, ref.dup_of)
        np.testing.assert_array_equal(fast.matches, ref.matches)


def test_dedup_removes_planted_duplicates_only() -> None:
    texts, origin = _planted(random.Random(3), 150)
    sig = mh.minhash(texts, num_perm=128, bits=32)
    bands, rows = lsh.optimal_params(0.8, 128, fp_weight=0.1, fn_weight=0.9)
    result = lsh.dedup(sig, 0.8, bands, rows)
    kept_origins = [origin[i] for i in np.flatnonzero(result.keep)]
    assert sorted(kept_origins) == list(range(150))  # one per base: none lost, none left twice
    for row, first in enumerate(result.dup_of.tolist()):
        if first >= 0:
            assert origin[first] == origin[row] and first < row and result.keep[first]
            assert result.similarity[row] >= 0.8
    clusters = result.clusters()
    assert sum(len(v) for v in clusters.values()) == int((~result.keep).sum())


def test_dedup_edge_cases() -> None:
    sig = mh.minhash(["one text", "one text", "another text entirely"], num_perm=16)
    result = lsh.dedup(sig, 1.0, 1, 16)
    assert result.keep.tolist() == [True, False, True] and result.dup_of.tolist() == [-1, 0, -1]
    assert lsh.dedup(sig[:1], 0.8, 4, 4).keep.tolist() == [True]
    with pytest.raises(ValueError):
        lsh.dedup(sig, 0.8, 5, 4)  # 20 columns > 16
    with pytest.raises(ValueError):
        lsh.dedup(sig, 0.0, 4, 4)


def test_optimal_params() -> None:
    bands, rows = lsh.optimal_params(0.8, 128)
    assert bands * rows <= 128
    fn_bands, fn_rows = lsh.optimal_params(0.8, 128, fp_weight=0.1, fn_weight=0.9)

    def p(s: float, b: int, r: int) -> float:
        return 1 - (1 - s**r) ** b

    # Weighting misses more raises the chance that a pair at the threshold is compared.
    assert p(0.85, fn_bands, fn_rows) > p(0.85, bands, rows)
    assert p(0.85, fn_bands, fn_rows) > 0.95 and p(0.3, fn_bands, fn_rows) < 0.01
    with pytest.raises(ValueError):
        lsh.optimal_params(1.5, 128)


# -- kcenter -----------------------------------------------------------------------------------


def _points(seed: int, n: int = 250, d: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return np.vstack([x, x[:4], x[10:12]])  # exact duplicates at the end


_FAST = [kc.kcenter_numpy] + ([kc.kcenter_torch] if HAS_TORCH else [])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("fast", _FAST, ids=lambda f: f.__name__)
def test_kcenter_fast_equals_reference(metric: kc.Metric, fast: object) -> None:
    x = _points(1)
    ref = kc.kcenter_reference(x, 40, metric=metric, start=3)
    got = fast(x, 40, metric=metric, start=3)  # type: ignore[operator]
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.assignment, ref.assignment)
    np.testing.assert_allclose(got.radii, ref.radii, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got.distances, ref.distances, rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_kcenter_properties(metric: kc.Metric) -> None:
    x = _points(2)
    result = kc.kcenter(x, 60, metric=metric)
    idx = result.indices.tolist()
    assert idx[0] == 0 and len(set(idx)) == len(idx) == 60
    assert np.all(np.diff(result.radii) <= 1e-6)  # the radius never grows with k
    # The covering radius is the largest distance to the nearest center, by brute force.
    xn = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    d = np.sqrt(((xn[:, None, :] - xn[None, idx, :]) ** 2).sum(-1).astype(np.float64))
    d = d**2 / 2 if metric == "cosine" else d
    assert result.radius == pytest.approx(d.min(axis=1).max(), rel=1e-3, abs=1e-3)
    np.testing.assert_allclose(result.distances, d.min(axis=1), rtol=1e-3, atol=2e-3)
    assert (result.assignment == d.argmin(axis=1)).mean() > 0.99  # up to float ties
    # Radii agree with separate runs at smaller k (greedy selection is a prefix).
    for k in (1, 5, 20):
        small = kc.kcenter(x, k, metric=metric)
        assert small.indices.tolist() == idx[:k]
        assert small.radius == pytest.approx(result.radii[k - 1], rel=1e-5)


def test_kcenter_duplicates_and_ties() -> None:
    x = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    result = kc.kcenter_reference(x, 10, metric="l2", start=2)
    # Duplicates are one point (the lowest index), so only three distinct centers exist;
    # start=2 is the duplicate of row 0. Rows 1 and 4 are equally far from row 0 (sqrt 2 vs 2):
    # row 4 is farther; then row 1.
    assert result.indices.tolist() == [0, 4, 1]
    assert result.radius == 0.0
    assert result.assignment.tolist() == [0, 2, 0, 2, 1]
    for fast in _FAST:
        assert fast(x, 10, metric="l2", start=2).indices.tolist() == [0, 4, 1]
    tie = np.array([[0, 0], [1, 0], [-1, 0], [0, 1]], dtype=np.float32)
    assert kc.kcenter(tie, 2, metric="l2").indices.tolist() == [0, 1]  # lowest index of the tie
    with pytest.raises(ValueError):
        kc.kcenter(tie, 0)
    with pytest.raises(ValueError):
        kc.kcenter(tie, 2, start=9)


@pytest.mark.gpu
def test_kcenter_torch_cuda_equals_numpy() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = np.random.default_rng(3).normal(size=(20_000, 256)).astype(np.float32)
    cpu = kc.kcenter_numpy(x, 200)
    gpu = kc.kcenter_torch(x, 200, device="cuda")
    np.testing.assert_array_equal(gpu.indices, cpu.indices)
    np.testing.assert_allclose(gpu.radii, cpu.radii, rtol=1e-4)


# -- embeddings and the package ----------------------------------------------------------------


def test_hashing_embedder() -> None:
    texts = [
        "How can I make a weapon at home?",
        "how can i make a weapon at home ?",
        "Write a poem about spring flowers",
        "如何在家里制造武器？",
        "",
    ]
    e = emb.hashing_embed(texts, dim=256)
    assert e.shape == (5, 256) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e[:4], axis=1), 1.0, rtol=1e-5)
    assert not e[4].any()
    sim = e @ e.T
    assert sim[0, 1] > 0.8 and sim[0, 2] < 0.3 and sim[0, 3] < 0.3
    np.testing.assert_array_equal(e, emb.hashing_embed(texts, dim=256))


def test_make_embedder() -> None:
    assert isinstance(emb.make_embedder("hashing", dim=64), emb.HashingEmbedder)
    assert emb.make_embedder("transformers:/models/x") == emb.TransformersEmbedder("/models/x")
    py = emb.make_embedder("python:assay.kernels.embed:hashing_embed")
    np.testing.assert_array_equal(py(["a b c"]), emb.hashing_embed(["a b c"]))
    for bad in ("hashing:3", "transformers:", "python:nomodule", "sbert"):
        with pytest.raises(ValueError):
            emb.make_embedder(bad)


def test_package_is_light() -> None:
    code = (
        "import sys, assay.kernels, assay.kernels.minhash, assay.kernels.lsh, "
        "assay.kernels.kcenter, assay.kernels.embed; "
        "assay.kernels.available_backends(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert set(available_backends()) >= {"minhash", "lsh", "kcenter"}
