"""Text embedders for diversity selection: feature hashing (numpy) and local HF models (torch).

An embedder is a picklable callable ``(texts) -> float32 array (len(texts), dim)``, so a caller
can ship it to other processes (Ray tasks) with the texts. :func:`make_embedder` builds one from
a spec string:

- ``"hashing"``: :class:`HashingEmbedder`, character n-gram feature hashing (numpy only, offline,
  deterministic across processes).
- ``"transformers:<path>"``: :class:`TransformersEmbedder`, mean-pooled last hidden states of a
  local Hugging Face model; torch and transformers are imported only when it first embeds.
- ``"python:<module>:<attribute>"``: :class:`PythonEmbedder`, any importable callable with the
  same signature.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .minhash import shingle_hashes

Embedder = Callable[[Sequence[str]], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class HashingEmbedder:
    """Character n-gram feature hashing into ``dim`` signed buckets, L2-normalised.

    Every character n-gram (``ngram_min`` to ``ngram_max``) of the normalised text (as in
    :func:`assay.kernels.minhash.normalize`) is hashed with the stable shingle hash; the low bits
    pick the bucket (``hash % dim``), bit 31 the sign (+1 or -1). A text's vector is the sum,
    divided by its L2 norm (a text with no n-grams stays zero).
    """

    dim: int = 512
    """Output dimension."""
    ngram_min: int = 2
    """Shortest n-gram."""
    ngram_max: int = 4
    """Longest n-gram."""

    def __post_init__(self) -> None:
        """Checks the sizes."""
        if self.dim < 1:
            raise ValueError(f"dim must be at least 1, not {self.dim}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"bad n-gram range {self.ngram_min}..{self.ngram_max}")

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeds the texts."""
        n_texts = len(texts)
        acc = np.zeros(n_texts * self.dim, dtype=np.float64)
        for n in range(self.ngram_min, self.ngram_max + 1):
            hashes, owner = shingle_hashes(texts, n)
            if not hashes.size:
                continue
            bucket = owner * self.dim + (hashes % np.uint64(self.dim)).astype(np.int64)
            sign = 1.0 - 2.0 * ((hashes >> np.uint64(31)) & np.uint64(1)).astype(np.float64)
            acc += np.bincount(bucket, weights=sign, minlength=acc.size)
        out = acc.reshape(n_texts, self.dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
        return out.astype(np.float32)


def hashing_embed(
    texts: Sequence[str], dim: int = 512, ngram_min: int = 2, ngram_max: int = 4
) -> npt.NDArray[np.float32]:
    """Feature-hashing embeddings of ``texts`` (see :class:`HashingEmbedder`)."""
    return HashingEmbedder(dim, ngram_min, ngram_max)(texts)


_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class TransformersEmbedder:
    """Mean-pooled last hidden states of a local Hugging Face model (torch, transformers).

    The model is loaded on first use and cached per process (per path and device), so a worker
    that embeds many chunks loads it once.
    """

    path: str
    """Local model folder (or a hub id, where a hub is reachable)."""
    batch_size: int = 32
    """Texts per forward pass."""
    max_length: int = 512
    """Tokens per text (longer texts are truncated)."""
    device: str | None = None
    """torch device; default CUDA when available, else CPU."""

    def _load(self) -> tuple[Any, Any, Any]:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f'the transformers embedder needs torch and transformers: pip install "assay[hf]" '
                f"({exc})"
            ) from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (self.path, device)
        with _MODELS_LOCK:
            if key not in _MODELS:
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
                model = AutoModel.from_pretrained(self.path).to(device).eval()
                _MODELS[key] = (tokenizer, model)
            tokenizer, model = _MODELS[key]
        return torch, tokenizer, model

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeds the texts."""
        torch, tokenizer, model = self._load()
        parts: list[npt.NDArray[np.float32]] = []
        for lo in range(0, len(texts), self.batch_size):
            batch = list(texts[lo : lo + self.batch_size])
            enc = tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(model.device)
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
            parts.append(pooled.float().cpu().numpy())
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


@dataclass(frozen=True)
class PythonEmbedder:
    """An importable callable ``(texts) -> array (len(texts), dim)``, named ``module:attr``."""

    target: str
    """``"package.module:function"``."""

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeds the texts with the named callable."""
        module, _, attr = self.target.partition(":")
        fn: Any = importlib.import_module(module)
        for name in attr.split("."):
            fn = getattr(fn, name)
        out = np.asarray(fn(list(texts)), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ValueError(
                f"embedder {self.target} returned shape {out.shape} for {len(texts)} texts"
            )
        return out


def make_embedder(spec: str, dim: int = 512) -> Embedder:
    """Builds an embedder from its spec (see the module docstring).

    Args:
        spec: ``"hashing"``, ``"transformers:<path>"`` or ``"python:<module>:<attr>"``.
        dim: Output dimension of the hashing embedder.

    Raises:
        ValueError: The spec is not one of those forms.
    """
    kind, _, rest = spec.partition(":")
    if kind == "hashing" and not rest:
        return HashingEmbedder(dim=dim)
    if kind == "transformers" and rest:
        return TransformersEmbedder(path=rest)
    if kind == "python" and ":" in rest and all(rest.partition(":")[::2]):
        return PythonEmbedder(target=rest)
    raise ValueError(
        f"unknown embedder {spec!r}: use 'hashing', 'transformers:<model path>' or "
        "'python:<module>:<callable>'"
    )


__all__ = [
    "Embedder",
    "HashingEmbedder",
    "PythonEmbedder",
    "TransformersEmbedder",
    "hashing_embed",
    "make_embedder",
]
