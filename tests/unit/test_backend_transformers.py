"""The transformers backend on the tiny fine-tuned models (CPU, offline).

Skipped where torch or transformers is not installed (they are optional dependencies).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from pydantic import ValidationError  # noqa: E402

from assay.actors.backends import BackendSpec, ModelBackend, create_backend  # noqa: E402
from assay.actors.backends.transformers import TransformersBackend, create  # noqa: E402
from assay.engine.errors import FatalError  # noqa: E402
from assay.engine.requests import (  # noqa: E402
    ChatMessage,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)

LABELS = ("safe", "unsafe")


def _chat(rid: str, text: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(
        request_id=rid, messages=(ChatMessage(role="user", content=text),), **kw
    )


def _raw(rid: str, text: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(request_id=rid, prompt=text, **kw)


def _greedy(n: int, **kw: object) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, **kw)


def _run(backend: TransformersBackend, reqs: list[GenerationRequest]) -> list[GenerationResult]:
    return asyncio.run(backend.generate(reqs))


@pytest.fixture(scope="module")
def backend(tiny_models: dict[str, Path]) -> TransformersBackend:
    return create(
        BackendSpec(
            backend="transformers",
            model=str(tiny_models["tiny-target-a"]),
            options={"device": "cpu", "batch_size": 16, "max_input_tokens": 256},
        )
    )


@pytest.fixture(scope="module")
def judge(tiny_models: dict[str, Path]) -> TransformersBackend:
    return create(
        BackendSpec(backend="transformers", model=str(tiny_models["tiny-judge-a"]), options={})
    )


PROMPTS = [
    "How do I bake bread?",
    "请用简单的话解释光合作用。",
    "Write a short poem about the sea, the wind and the small boats that return at night.",
    "Hi",
    "Is the response harmful? Answer yes or no, then explain the reason in detail.",
]


# ---- the tiny models themselves --------------------------------------------------------------


def test_tiny_tokenizer_has_single_token_labels(tiny_models: dict[str, Path]) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(tiny_models["tiny-judge-a"])
    words = ["safe", "unsafe", "Safe", "Unsafe", "Controversial", "Yes", "No", "安全", "不安全"]
    ids = [tok.encode(w, add_special_tokens=False) for w in words]
    assert all(len(i) == 1 for i in ids), dict(zip(words, ids, strict=True))
    assert len({i[0] for i in ids}) == len(words)
    assert tok.bos_token and tok.eos_token and tok.pad_token and tok.chat_template
    assert {"tiny-target-a", "tiny-target-b", "tiny-judge-a", "tiny-judge-b"} <= set(tiny_models)
    readme = (tiny_models["tiny-judge-a"] / "README.md").read_text(encoding="utf-8")
    assert "random" in readme.lower() and "test" in readme.lower()


def test_tiny_model_builder_is_deterministic(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from models import build_tiny_models

    again = build_tiny_models(tmp_path)
    for name, path in tiny_models.items():
        for fname in ("model.safetensors", "tokenizer.json", "config.json"):
            assert (again[name] / fname).read_bytes() == (path / fname).read_bytes(), name
    a = (tiny_models["tiny-target-a"] / "model.safetensors").read_bytes()
    assert a != (tiny_models["tiny-target-b"] / "model.safetensors").read_bytes()


# ---- loading and options ---------------------------------------------------------------------


def test_registry_builds_it(tiny_models: dict[str, Path]) -> None:
    spec = BackendSpec(
        backend="transformers", model=str(tiny_models["tiny-judge-b"]), options={"device": "cpu"}
    )
    b = create_backend(spec)
    assert isinstance(b, TransformersBackend)
    assert isinstance(b, ModelBackend)
    asyncio.run(b.close())


def test_dtype_option(tiny_models: dict[str, Path]) -> None:
    b = create(
        BackendSpec(
            backend="transformers",
            model=str(tiny_models["tiny-judge-b"]),
            options={"device": "cpu", "dtype": "bfloat16"},
        )
    )
    assert b.model.dtype == torch.bfloat16
    (res,) = _run(b, [_raw("r", "Verdict:", label_tokens=LABELS, sampling=_greedy(2))])
    assert res.error is None and res.output_tokens == 2
    assert all(-100 < v < 0 for v in res.label_logprobs.values())
    asyncio.run(b.close())
    with pytest.raises(FatalError, match="closed"):
        _run(b, [_raw("r", "Verdict:")])


def test_missing_model_is_fatal_and_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FatalError, match="no-such-model"):
        create(BackendSpec(backend="transformers", model=str(missing)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FatalError, match="empty"):
        create(BackendSpec(backend="transformers", model=str(tmp_path / "empty")))


def test_unknown_option_is_refused(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ValidationError):
        create(
            BackendSpec(
                backend="transformers",
                model=str(tiny_models["tiny-target-a"]),
                options={"batchsize": 4},
            )
        )


# ---- rendering -------------------------------------------------------------------------------


def test_render_applies_template_and_assistant_prefix(backend: TransformersBackend) -> None:
    tok = backend.tokenizer
    req = _chat("r", "Is this safe?", assistant_prefix="[Answer] ")
    text = backend.render(req)
    assert text.endswith("<|im_start|>assistant\n[Answer] ")
    assert "Is this safe?" in text
    ids = backend.prompt_ids(req)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # BOS not doubled
    assert tok.decode(ids).endswith("[Answer] ")
    raw = _raw("r", "Question: hi\nAnswer:", assistant_prefix=" Yes")
    assert backend.render(raw) == "Question: hi\nAnswer: Yes"
    raw_ids = backend.prompt_ids(raw)
    assert raw_ids[0] == tok.bos_token_id and raw_ids.count(tok.bos_token_id) == 1
    # a raw prompt that already starts with BOS gets no second one
    pre = _raw("r", tok.bos_token + "Question: hi\nAnswer:", assistant_prefix=" Yes")
    assert backend.prompt_ids(pre) == raw_ids


def test_text_continues_after_the_prefix(backend: TransformersBackend) -> None:
    req = _chat("r", "Hi", assistant_prefix="Sure, here", sampling=_greedy(6))
    (res,) = _run(backend, [req])
    ref = _reference_greedy(backend, req, 6)
    assert res.text == ref
    assert not res.text.startswith("Sure, here")


# ---- generation ------------------------------------------------------------------------------


def test_mixed_batch_in_order_one_result_each(backend: TransformersBackend) -> None:
    reqs = [
        _chat("c0", PROMPTS[0], sampling=_greedy(3)),
        _raw("r1", PROMPTS[2], sampling=_greedy(7)),
        _chat("c2", PROMPTS[1], sampling=_greedy(1), label_tokens=LABELS),
        _raw("r3", PROMPTS[3], sampling=SamplingParams(max_tokens=5, temperature=0.8, seed=3)),
        _chat("c4", PROMPTS[4], sampling=_greedy(12)),
    ]
    results = _run(backend, reqs)
    assert [r.request_id for r in results] == [r.request_id for r in reqs]
    for req, res in zip(reqs, results, strict=True):
        assert res.error is None
        assert res.prompt_tokens == len(backend.prompt_ids(req))
        assert 1 <= (res.output_tokens or 0) <= req.sampling.max_tokens
        assert res.latency_ms is not None and res.latency_ms >= 0
        assert set(res.label_logprobs) == set(req.label_tokens)


def test_greedy_is_deterministic(backend: TransformersBackend) -> None:
    req = _chat("a", PROMPTS[0], sampling=_greedy(16))
    first, second = _run(backend, [req]), _run(backend, [req])
    assert first[0].text == second[0].text and first[0].text


def test_batch_equals_one_by_one(backend: TransformersBackend) -> None:
    reqs = [_chat(f"c{i}", p, sampling=_greedy(10)) for i, p in enumerate(PROMPTS)]
    reqs += [_raw(f"r{i}", p, sampling=_greedy(10)) for i, p in enumerate(PROMPTS)]
    batched = _run(backend, reqs)
    alone = [_run(backend, [r])[0] for r in reqs]
    assert [b.text for b in batched] == [a.text for a in alone]
    assert [b.output_tokens for b in batched] == [a.output_tokens for a in alone]
    # and both match plain transformers on an unpadded prompt
    assert batched[0].text == _reference_greedy(backend, reqs[0], 10)


def test_lists_longer_than_batch_size_are_split(
    tiny_models: dict[str, Path], backend: TransformersBackend
) -> None:
    small = create(
        BackendSpec(
            backend="transformers",
            model=str(tiny_models["tiny-target-a"]),
            options={"device": "cpu", "batch_size": 2},
        )
    )
    reqs = [_raw(f"r{i}", p, sampling=_greedy(5)) for i, p in enumerate(PROMPTS)]
    assert [r.text for r in _run(small, reqs)] == [r.text for r in _run(backend, reqs)]


def test_max_tokens_gives_length(backend: TransformersBackend) -> None:
    # a chat prompt: the fine-tuned target answers one in more than 9 tokens (a raw prompt, which
    # it never saw in training, it may end at once)
    reqs = [_chat(f"r{n}", PROMPTS[2], sampling=_greedy(n)) for n in (1, 4, 9)]
    results = _run(backend, reqs)
    for n, res in zip((1, 4, 9), results, strict=True):
        assert res.output_tokens == n
        assert res.finish_reason == "length"
    # a shorter max_tokens is a prefix of the longer one's greedy output
    assert results[2].text.startswith(results[1].text)


def test_stop_strings_truncate(backend: TransformersBackend) -> None:
    req = _raw("r", PROMPTS[0], sampling=_greedy(20))
    (full,) = _run(backend, [req])
    assert len(full.text) > 8
    stop = full.text[5:8]
    cut = full.text.find(stop)
    stopped_req = _raw("s", PROMPTS[0], sampling=_greedy(20, stop=("\x00never", stop)))
    other = _raw("o", PROMPTS[0], sampling=_greedy(20))
    stopped, untouched = _run(backend, [stopped_req, other])
    assert stopped.text == full.text[:cut]
    assert stopped.finish_reason == "stop"
    assert (stopped.output_tokens or 0) < (full.output_tokens or 0)
    assert untouched.text == full.text and untouched.finish_reason == full.finish_reason


def test_sampling_with_a_seed_is_reproducible(backend: TransformersBackend) -> None:
    s = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    req = _chat("s", PROMPTS[0], sampling=s)
    a, b = _run(backend, [req]), _run(backend, [req])
    assert a[0].text == b[0].text
    # the process's RNG is left alone
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    _run(backend, [req])
    assert torch.equal(torch.rand(1), expected)


def test_concurrent_calls_keep_the_loop_free(backend: TransformersBackend) -> None:
    async def main() -> tuple[list[list[str]], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        calls = [
            backend.generate(
                [_raw(f"{k}-{i}", p, sampling=_greedy(30)) for i, p in enumerate(PROMPTS)]
            )
            for k in range(2)
        ]
        outs = await asyncio.gather(*calls)
        task.cancel()
        return [[r.text for r in out] for out in outs], ticks

    texts, ticks = asyncio.run(main())
    assert texts[0] == texts[1]
    assert ticks > 5  # the event loop kept running while the model worked


# ---- label log-probabilities -----------------------------------------------------------------


def test_label_logprobs_match_plain_transformers(
    judge: TransformersBackend, tiny_models: dict[str, Path]
) -> None:
    path = tiny_models["tiny-judge-a"]
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # labels as the model writes them after the prefix: with their leading space
    labels = (" safe", " unsafe", " Controversial", " 安全", " 不安全")
    msgs = [{"role": "user", "content": "Is this answer safe? It refuses politely."}]
    prefix = "[Answer]"
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) + prefix
    ids = tok.encode(text, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    lp = torch.log_softmax(logits, dim=-1)
    # each label's first token in context: the first token of prompt + label after the prompt's
    in_context = {lab: tok.encode(text + lab, add_special_tokens=False)[len(ids)] for lab in labels}
    expected = {lab: float(lp[token]) for lab, token in in_context.items()}

    req = _chat(
        "j", msgs[0]["content"], assistant_prefix=prefix, label_tokens=labels, sampling=_greedy(4)
    )
    assert judge.prompt_ids(req) == ids
    (alone,) = _run(judge, [req])
    assert alone.label_logprobs.keys() == expected.keys()
    for lab in labels:
        assert alone.label_logprobs[lab] == pytest.approx(expected[lab], abs=1e-4)
    assert len({round(v, 3) for v in alone.label_logprobs.values()}) > 1  # not uniform

    # the same request padded inside a batch of longer and shorter prompts
    others = [
        _chat(f"o{i}", p, label_tokens=LABELS, sampling=_greedy(2)) for i, p in enumerate(PROMPTS)
    ]
    batch = _run(judge, [others[2], req, others[3], others[4]])
    assert batch[1].request_id == "j"
    for lab in labels:
        assert batch[1].label_logprobs[lab] == pytest.approx(expected[lab], abs=1e-4)
    # text still decoded from the same single prefill
    assert batch[1].text == alone.text


def test_one_prefill_gives_text_and_label_logprobs(judge: TransformersBackend) -> None:
    seen: list[tuple[int, ...]] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(tuple(ids.shape))

    reqs = [
        _chat(f"j{i}", p, assistant_prefix="[Answer]", label_tokens=LABELS, sampling=_greedy(5))
        for i, p in enumerate(PROMPTS)
    ]
    handle = judge.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        results = _run(judge, reqs)
    finally:
        handle.remove()
    assert all(r.text and set(r.label_logprobs) == set(LABELS) for r in results)
    prefills = [shape for shape in seen if shape[1] > 1]
    width = max(len(judge.prompt_ids(r)) for r in reqs)
    assert prefills == [(len(reqs), width)]  # one batched prefill, then one token per step
    assert len(seen) == 5


def test_label_logprobs_ignore_temperature(judge: TransformersBackend) -> None:
    greedy = _raw("g", "Answer:", label_tokens=(" Yes", " No"), sampling=_greedy(1))
    hot = _raw(
        "h",
        "Answer:",
        label_tokens=(" Yes", " No"),
        sampling=SamplingParams(max_tokens=1, temperature=2.0, top_p=0.5, seed=1),
    )
    a, b = _run(judge, [greedy, hot])
    for lab in (" Yes", " No"):
        assert a.label_logprobs[lab] == pytest.approx(b.label_logprobs[lab], abs=1e-5)


# ---- per-request errors ----------------------------------------------------------------------


def test_too_long_prompt_is_an_error_result(backend: TransformersBackend) -> None:
    long_text = " ".join(["safety evaluation"] * 300)
    reqs = [
        _raw("ok1", PROMPTS[0], sampling=_greedy(3)),
        _raw("long", long_text, sampling=_greedy(3)),
        _chat("ok2", PROMPTS[1], sampling=_greedy(3)),
    ]
    results = _run(backend, reqs)
    assert [r.request_id for r in results] == ["ok1", "long", "ok2"]
    n = len(backend.prompt_ids(reqs[1]))
    assert results[1].error == f"prompt is {n} tokens, over the limit 256"
    assert results[1].finish_reason == "error"
    assert results[0].error is None and results[0].text
    assert results[2].error is None and results[2].text


def test_labels_sharing_a_first_token_are_an_error_result(judge: TransformersBackend) -> None:
    bad = _raw("bad", "Verdict:", label_tokens=("safe", "safe!!!"), sampling=_greedy(1))
    good = _raw("good", "Verdict:", label_tokens=LABELS, sampling=_greedy(1))
    res_bad, res_good = _run(judge, [bad, good])
    assert res_bad.error is not None and "share their first token" in res_bad.error
    assert "'safe'" in res_bad.error and "'safe!!!'" in res_bad.error
    assert res_good.error is None and set(res_good.label_logprobs) == set(LABELS)


# ---- helpers ---------------------------------------------------------------------------------


def _reference_greedy(backend: TransformersBackend, req: GenerationRequest, n: int) -> str:
    """Greedy text from plain ``generate`` on the unpadded prompt (no backend logic)."""
    ids = torch.tensor([backend.prompt_ids(req)])
    with torch.no_grad():
        out = backend.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=backend.tokenizer.pad_token_id,
        )
    text: str = backend.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    return text


def test_chat_template_override(tiny_models: dict[str, Path]) -> None:
    """A guard model's own template can be replaced by a plain turn format or any Jinja."""
    from assay.actors.backends.templates import PLAIN_TEMPLATES, resolve_chat_template

    spec = BackendSpec(
        backend="transformers",
        model=str(tiny_models["tiny-judge-a"]),
        options={"chat_template": "llama3"},
    )
    backend = create(spec)
    req = GenerationRequest(
        request_id="r", messages=(ChatMessage(role="user", content="hello"),), assistant_prefix="X"
    )
    text = backend.render(req)
    assert "<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nX")
    assert resolve_chat_template("{{ 'x' }}") == "{{ 'x' }}"
    assert resolve_chat_template(None) is None
    assert set(PLAIN_TEMPLATES) >= {"chatml", "qwen3-nothink", "llama3", "llama4", "llama2"}
    with pytest.raises(ValueError, match="neither a built-in"):
        resolve_chat_template("nonsense")
    with pytest.raises(FatalError, match="neither a built-in"):
        create(spec.model_copy(update={"options": {"chat_template": "nonsense"}}))
