"""assay.kernels: numeric hot paths, each with a plain numpy or torch reference.

A leaf package: it imports nothing else from assay, and nothing heavy at import time (numpy is
imported by the kernel modules, torch only inside the functions that use it).

- :mod:`.minhash`: MinHash signatures of texts over character n-grams.
- :mod:`.lsh`: LSH banding and greedy near-duplicate removal over signatures.
- :mod:`.kcenter`: greedy k-center (farthest-point) selection over embeddings.
- :mod:`.embed`: text embedders (feature hashing; local Hugging Face models).

Every kernel has a ``*_reference`` function (plain loops: the definition) and a fast path that
the tests hold equal to it.
"""

from __future__ import annotations

import importlib.util


def is_available(name: str) -> bool:
    """Whether an optional dependency (``"torch"``, ``"transformers"``) can be imported.

    Checked without importing it.
    """
    return importlib.util.find_spec(name) is not None


def available_backends() -> dict[str, str]:
    """Which implementation each kernel's fast path uses in this environment.

    Returns:
        Kernel name to a short description of its active fast path.
    """
    torch = is_available("torch")
    return {
        "minhash": "numpy (vectorised; torch on CPU measured slower, so not used)",
        "lsh": "numpy (sorted band keys)",
        "kcenter": (
            "numpy; torch for large inputs when a CUDA device is available"
            if torch
            else "numpy (torch not installed)"
        ),
        "embed.hashing": "numpy",
        "embed.transformers": (
            "torch + transformers" if torch and is_available("transformers") else "unavailable"
        ),
    }


__all__ = ["available_backends", "is_available"]
