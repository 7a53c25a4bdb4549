"""Judge request rendering per second: the backends' tokenizer-side work for every verdict.

Every judge request is built by its format, rendered as its rendering contract says and
tokenized (``render_request``), and its label tokens are read in context
(``label_ids_in_context``, cached by the prompt's end). This measures both with Meta's real Llama 3
tokenizer (from the ``llama-models`` test dependency) on Llama Guard 3 requests, and writes JSON to
benchmarks/results/render.json (or --out):

* ``build``: ``JudgeFormat.build_request`` (fencing included);
* ``render``: ``render_request`` (plain turn format and tokenization);
* ``labels_cold`` / ``labels_cached``: label ids in context, without and with the backends'
  ``LabelIdCache``.

    python benchmarks/bench_render.py --requests 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from real_tokenizers import installed_llama_models, llama3_tokenizer  # noqa: E402

from assay.actors.backends.templates import (  # noqa: E402
    LabelIdCache,
    label_ids_in_context,
    render_request,
)
from assay.engine.judges import JudgeItem, get_judge  # noqa: E402

WORDS = [
    *("the", "model", "answers", "a", "question", "about", "safety"),
    *("locks", "chemistry", "code", "history", "policy"),
]


def _items(n: int, rng: random.Random) -> list[JudgeItem]:
    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [JudgeItem(prompt=text(20), response=text(rng.randint(40, 200))) for _ in range(n)]


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/render.json")
    args = parser.parse_args()
    folder = installed_llama_models()
    if folder is None:
        raise SystemExit("needs the llama-models package (pip install -e '.[test]')")
    tokenizer = llama3_tokenizer(folder)
    judge = get_judge("llama-guard-3")
    items = _items(args.requests, random.Random(0))

    t0 = time.perf_counter()
    requests = [judge.build_request(item, f"r{i}") for i, item in enumerate(items)]
    t1 = time.perf_counter()
    rendered = [render_request(tokenizer, req, None) for req in requests]
    t2 = time.perf_counter()
    for req, r in zip(requests, rendered, strict=True):
        label_ids_in_context(tokenizer, r.text, req.label_tokens)
    t3 = time.perf_counter()
    cache = LabelIdCache()  # what the transformers and vLLM backends keep
    for req, r in zip(requests, rendered, strict=True):
        cache.get(tokenizer, r.text, req.label_tokens)
    t4 = time.perf_counter()

    tokens = sum(len(r.ids) for r in rendered)
    result: dict[str, Any] = {
        "benchmark": "bench_render",
        "tokenizer": "Llama 3 (llama-models 0.3.0 tiktoken ranks)",
        "format": "llama-guard-3",
        "requests": args.requests,
        "mean_prompt_tokens": round(tokens / len(rendered), 1),
        "build_per_s": _rate(args.requests, t1 - t0),
        "render_per_s": _rate(args.requests, t2 - t1),
        "labels_cold_per_s": _rate(args.requests, t3 - t2),
        "labels_cached_per_s": _rate(args.requests, t4 - t3),
        "label_cache_entries": len(cache),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
