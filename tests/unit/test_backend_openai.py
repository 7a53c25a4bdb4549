"""The OpenAI-compatible HTTP backend against a real loopback server (tests/openai_server.py).

Behaviour is checked by what the server recorded (bodies, headers, call counts, concurrency) and
by the results, never by wall-clock timing. Retry waits and the rate limiter run on injected
fake sleeps and clocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from openai_server import running_server, unused_base_url

from assay.actors.backends import BackendSpec, ModelBackend, create_backend
from assay.actors.backends.openai import (
    OpenAIBackend,
    SlidingWindowLimiter,
    create,
    match_label_logprobs,
)
from assay.engine.errors import ConfigError, FatalError
from assay.engine.requests import ChatMessage, GenerationRequest, SamplingParams

T = TypeVar("T")

FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "trust_env": False}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def spec(base_url: str, **options: Any) -> BackendSpec:
    return BackendSpec(
        backend="openai", model="served-model", options={"base_url": base_url, **FAST, **options}
    )


def chat(rid: str, text: str = "hello", **kw: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id=rid, messages=(ChatMessage(role="user", content=text),), **kw
    )


def raw(rid: str, prompt: str = "Once upon", **kw: Any) -> GenerationRequest:
    return GenerationRequest(request_id=rid, prompt=prompt, **kw)


async def generate(backend: OpenAIBackend, requests: list[GenerationRequest]) -> list[Any]:
    try:
        return await backend.generate(requests)
    finally:
        await backend.close()


class FakeClock:
    """A clock whose sleeps advance it instantly; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


# --- requests and results -------------------------------------------------------------------


def test_mixed_batch_keeps_order_and_count() -> None:
    with running_server() as server:
        server.fail_when("BAD", 400, "nope")
        backend = create(spec(server.base_url))
        assert isinstance(backend, ModelBackend)
        reqs = [chat(f"r{i}", f"BAD {i}" if i % 3 == 1 else f"item {i}") for i in range(9)]
        results = run(generate(backend, reqs))
    assert [r.request_id for r in results] == [q.request_id for q in reqs]
    for i, res in enumerate(results):
        if i % 3 == 1:
            assert res.error is not None and "HTTP 400" in res.error and "nope" in res.error
            assert res.finish_reason == "error"
        else:
            assert res.error is None and res.text == f"echo: item {i}"
    assert server.calls == 9


def test_chat_body_carries_messages_and_sampling() -> None:
    sampling = SamplingParams(max_tokens=7, temperature=0.3, top_p=0.9, seed=11, stop=("END",))
    with running_server() as server:
        backend = create(spec(server.base_url, extra_body={"top_k": 5}, headers={"X-Run": "abc"}))
        req = GenerationRequest(
            request_id="a",
            messages=(
                ChatMessage(role="system", content="be brief"),
                ChatMessage(role="user", content="hi"),
            ),
            sampling=sampling,
        )
        [res] = run(generate(backend, [req]))
    assert res.text == "echo: hi" and res.error is None
    [rec] = server.requests
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["x-run"] == "abc"
    assert "authorization" not in rec.headers
    assert rec.body == {
        "top_k": 5,
        "model": "served-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 7,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 11,
        "stop": ["END"],
    }


def test_completions_body_appends_prefix_and_refuses_messages() -> None:
    with running_server() as server:
        backend = create(spec(server.base_url, mode="completions"))
        reqs = [
            raw(
                "p",
                "Q: 2+2?\nA:",
                assistant_prefix=" The answer is",
                sampling=SamplingParams(seed=None),
            ),
            chat("m", "hello"),
        ]
        ok, refused = run(generate(backend, reqs))
    [rec] = server.requests  # the chat request never reached the server
    assert rec.path == "/v1/completions"
    assert rec.body["prompt"] == "Q: 2+2?\nA: The answer is"
    assert "messages" not in rec.body and "seed" not in rec.body
    assert ok.error is None and ok.text == "echo: Q: 2+2?\nA: The answer is"
    assert refused.error is not None and "mode='chat'" in refused.error


def test_chat_prefix_uses_vllm_continue_final_message() -> None:
    with running_server() as server:
        backend = create(spec(server.base_url))
        run(generate(backend, [chat("a", "judge this", assistant_prefix="Verdict:")]))
    body = server.requests[0].body
    assert body["messages"][-1] == {"role": "assistant", "content": "Verdict:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_chat_prefix_modes_message_and_reject() -> None:
    with running_server() as server:
        backend = create(spec(server.base_url, prefix_mode="message"))
        run(generate(backend, [chat("a", "x", assistant_prefix="Sure")]))
        body = server.requests[0].body
        assert body["messages"][-1] == {"role": "assistant", "content": "Sure"}
        assert "continue_final_message" not in body
        backend = create(spec(server.base_url, prefix_mode="reject"))
        [res] = run(generate(backend, [chat("b", "x", assistant_prefix="Sure")]))
    assert res.error is not None and "assistant_prefix" in res.error
    assert server.calls == 1


def test_raw_prompt_in_chat_mode_is_one_user_message() -> None:
    with running_server() as server:
        run(generate(create(spec(server.base_url)), [raw("a", "plain text")]))
    assert server.requests[0].body["messages"] == [{"role": "user", "content": "plain text"}]


def test_usage_and_finish_reason_are_mapped() -> None:
    with running_server() as server:
        server.reply(when="long", text="a b c", finish_reason="length", prompt_tokens=11)
        server.reply(when="filtered", text="", finish_reason="content_filter", usage=False)
        backend = create(spec(server.base_url))
        long, filtered = run(generate(backend, [chat("a", "long"), chat("b", "filtered")]))
    assert (long.finish_reason, long.prompt_tokens, long.output_tokens) == ("length", 11, 3)
    assert long.latency_ms is not None and long.latency_ms >= 0
    assert (filtered.finish_reason, filtered.prompt_tokens, filtered.output_tokens) == (
        "stop",
        None,
        None,
    )


# --- API key ------------------------------------------------------------------------------


def test_api_key_is_sent_as_bearer_from_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSAY_TEST_OPENAI_KEY", "sk-test-secret-123")
    with running_server() as server:
        backend = create(spec(server.base_url, api_key_env="ASSAY_TEST_OPENAI_KEY"))
        run(generate(backend, [chat("a")]))
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-secret-123"
    assert "sk-test-secret-123" not in backend.options.model_dump_json()
    assert "sk-test-secret-123" not in repr(backend.options)


@pytest.mark.parametrize(
    "options",
    [{"api_key": "sk-inline-999"}, {"API-KEY": "sk-inline-999"}, {"token": "sk-inline-999"}],
)
def test_inline_api_key_is_rejected(options: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="api_key_env") as info:
        create(BackendSpec(backend="openai", model="m", options=options))
    assert "sk-inline-999" not in str(info.value)


def test_secret_headers_are_rejected_without_echoing_them() -> None:
    options = {"headers": {"Authorization": "Bearer sk-inline-999"}}
    with pytest.raises(ConfigError, match="api_key_env") as info:
        create(BackendSpec(backend="openai", model="m", options=options))
    assert "sk-inline-999" not in str(info.value)


def test_missing_key_variable_is_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(FatalError, match="ASSAY_NO_SUCH_KEY_VAR"):
        create(spec("http://127.0.0.1:1/v1", api_key_env="ASSAY_NO_SUCH_KEY_VAR"))


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown_option"):
        create(spec("http://127.0.0.1:1/v1", unknown_option=1))
    with pytest.raises(ConfigError, match="extra_body"):
        create(spec("http://127.0.0.1:1/v1", extra_body={"model": "other"}))
    with pytest.raises(ConfigError, match="base_url"):
        create(spec("ftp://example/v1"))


def test_registry_builds_the_openai_backend() -> None:
    backend = create_backend(spec("http://127.0.0.1:1/v1"))
    assert isinstance(backend, OpenAIBackend)
    run(backend.close())


# --- retries and failures -----------------------------------------------------------------


def test_429_with_retry_after_is_retried_and_honoured() -> None:
    clock = FakeClock()
    with running_server() as server:
        server.fail(429, retry_after="7", message="slow down")
        backend = OpenAIBackend(spec(server.base_url, backoff_max_s=30), sleep=clock.sleep)
        [res] = run(generate(backend, [chat("a", "x")]))
    assert res.error is None and res.text == "echo: x"
    assert server.calls == 2
    assert clock.sleeps == [7.0]


def test_500_twice_then_success() -> None:
    with running_server() as server:
        server.fail(500, times=2)
        [res] = run(generate(create(spec(server.base_url, max_retries=2)), [chat("a", "x")]))
    assert res.error is None and res.text == "echo: x"
    assert server.calls == 3


def test_5xx_beyond_max_retries_is_an_error_result() -> None:
    with running_server() as server:
        server.fail(503, times=5, message="overloaded")
        [res] = run(generate(create(spec(server.base_url, max_retries=2)), [chat("a")]))
    assert res.error is not None and "HTTP 503" in res.error and "overloaded" in res.error
    assert "3 attempt" in res.error
    assert server.calls == 3


def test_400_is_not_retried() -> None:
    with running_server() as server:
        server.fail(400, message="context too long " + "x" * 5000)
        [res] = run(generate(create(spec(server.base_url)), [chat("a")]))
    assert res.error is not None and "HTTP 400" in res.error and "context too long" in res.error
    assert len(res.error) < 700  # the server's message is truncated
    assert server.calls == 1


def test_timeout_is_retried_then_an_error_result() -> None:
    with running_server() as server:
        server.stall(2.0, times=2)
        backend = create(spec(server.base_url, timeout_s=0.2, max_retries=1))
        [res] = run(generate(backend, [chat("a")]))
    assert res.error is not None and "timeout" in res.error
    assert server.calls == 2


def test_timeout_then_success() -> None:
    with running_server() as server:
        server.stall(2.0)
        backend = create(spec(server.base_url, timeout_s=0.2, max_retries=1))
        [res] = run(generate(backend, [chat("a", "x")]))
    assert res.error is None and res.text == "echo: x"
    assert server.calls == 2


def test_dropped_connection_is_retried() -> None:
    with running_server() as server:
        server.drop()
        [res] = run(generate(create(spec(server.base_url)), [chat("a", "x")]))
    assert res.error is None and res.text == "echo: x"
    assert server.calls == 2


def test_connection_refused_names_the_url() -> None:
    base_url = unused_base_url()
    clock = FakeClock()
    backend = OpenAIBackend(spec(base_url, max_retries=2), sleep=clock.sleep)
    results = run(generate(backend, [chat("a"), raw("b")]))
    assert [r.request_id for r in results] == ["a", "b"]
    for res in results:
        assert res.error is not None and f"{base_url}/chat/completions" in res.error
        assert "ConnectError" in res.error and "3 attempt" in res.error
    assert len(clock.sleeps) == 4  # two retries for each of the two requests


# --- concurrency and rate limits ------------------------------------------------------------


def test_max_concurrency_is_respected() -> None:
    with running_server(delay_s=0.02) as server:
        backend = create(spec(server.base_url, max_concurrency=4))
        results = run(generate(backend, [chat(f"r{i}", f"n{i}") for i in range(50)]))
    assert [r.text for r in results] == [f"echo: n{i}" for i in range(50)]
    assert server.calls == 50
    assert 2 <= server.max_concurrent <= 4


def test_sliding_window_limiter_on_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(5, 60.0, clock=clock, sleep=clock.sleep)
    granted: list[float] = []

    async def take() -> None:
        await limiter.acquire()
        granted.append(clock.now)

    async def main() -> None:
        await asyncio.gather(*(take() for _ in range(12)))

    run(main())
    assert sorted(granted) == [0.0] * 5 + [60.0] * 5 + [120.0] * 2
    for start in granted:  # no 60 s window holds more than 5 starts
        assert sum(start <= t < start + 60 for t in granted) <= 5


def test_requests_per_minute_limits_requests_started() -> None:
    clock = FakeClock()
    with running_server() as server:
        backend = OpenAIBackend(
            spec(server.base_url, requests_per_minute=3), clock=clock, sleep=clock.sleep
        )
        results = run(generate(backend, [chat(f"r{i}") for i in range(7)]))
    assert all(r.error is None for r in results)
    assert server.calls == 7
    # 7 requests at 3 per minute: starts at t=0 (3), t=60 (3), t=120 (1)
    assert clock.now == 120.0


# --- label log-probabilities ------------------------------------------------------------------


def test_chat_label_logprobs_from_top_logprobs() -> None:
    top = ((" unsafe", -0.2), ("safe", -1.9), ("\u0120safe", -1.7), ("other", -3.0))
    with running_server() as server:
        server.reply(text="unsafe", logprobs=top)
        backend = create(spec(server.base_url))
        req = chat("a", "judge", label_tokens=("safe", "unsafe", "maybe"))
        [res] = run(generate(backend, [req]))
    assert res.label_logprobs == {"safe": -1.7, "unsafe": -0.2}  # "maybe" absent: omitted
    body = server.requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert "logprob_token_ids" not in body


def test_completions_label_logprobs_and_top_k() -> None:
    top = ((" yes", -0.1), (" no", -2.4), ("No", -2.0))
    with running_server() as server:
        server.reply(text=" yes", logprobs=top)
        backend = create(spec(server.base_url, mode="completions", top_logprobs=5))
        [res] = run(generate(backend, [raw("a", "Safe?", label_tokens=("yes", "no"))]))
    assert res.label_logprobs == {"yes": -0.1, "no": -2.4}
    assert server.requests[0].body["logprobs"] == 5


def test_labels_outside_the_top_k_are_omitted() -> None:
    top = (("a", -0.1), ("b", -0.5), ("safe", -3.0))
    with running_server() as server:
        server.reply(text="a", logprobs=top)
        backend = create(spec(server.base_url, top_logprobs=2))
        [res] = run(generate(backend, [chat("a", label_tokens=("safe",))]))
    assert res.label_logprobs == {}
    assert res.error is None


def test_no_logprobs_requested_without_labels() -> None:
    with running_server() as server:
        [res] = run(generate(create(spec(server.base_url)), [chat("a")]))
    assert "logprobs" not in server.requests[0].body and res.label_logprobs == {}


def test_label_token_ids_use_vllm_extras() -> None:
    with running_server() as server:
        server.reply(text="safe", logprobs=(("safe", -0.1),), id_logprobs={101: -0.3, 202: -4.5})
        backend = create(spec(server.base_url, label_token_ids={"safe": 101, "unsafe": 202}))
        [res] = run(generate(backend, [chat("a", label_tokens=("safe", "unsafe"))]))
    assert res.label_logprobs == {"safe": -0.3, "unsafe": -4.5}
    body = server.requests[0].body
    assert body["logprob_token_ids"] == [101, 202]
    assert body["return_tokens_as_token_ids"] is True


def test_match_label_logprobs_rules() -> None:
    cands = [("\u2581safe", -1.0), (" safe", -0.5), ("safe", -9999.0), ("unsafe", float("nan"))]
    assert match_label_logprobs(cands, ("safe", "unsafe")) == {"safe": -0.5}
    by_id = [("token_id:7", -0.25), ("safe", -0.1)]
    assert match_label_logprobs(by_id, ("safe",), {"safe": 7}) == {"safe": -0.25}


# --- lifecycle ----------------------------------------------------------------------------


def test_close_closes_the_client() -> None:
    with running_server() as server:
        backend = create(spec(server.base_url))

        async def main() -> None:
            await backend.generate([chat("a")])
            await backend.close()
            assert backend._client.is_closed
            with pytest.raises(FatalError, match="closed"):
                await backend.generate([chat("b")])

        run(main())
    assert server.calls == 1


def test_partly_mapped_labels_fall_back_to_text() -> None:
    with running_server() as server:
        server.reply(text="safe", logprobs=(("safe", -0.1), ("unsafe", -2.0)))
        backend = create(spec(server.base_url, label_token_ids={"safe": 101}))
        [res] = run(generate(backend, [chat("a", label_tokens=("safe", "unsafe"))]))
    assert res.label_logprobs == {"safe": -0.1, "unsafe": -2.0}
    assert "logprob_token_ids" not in server.requests[0].body


# --- judges' rendering contract and label clashes --------------------------------------------


def test_a_guard_with_its_own_template_gets_the_raw_conversation() -> None:
    # Llama Guard 3 served by vLLM: the served model's own template builds the moderation prompt
    # from the conversation, so assay sends the conversation, not its own moderation text
    from assay.engine.judges import JudgeItem, get_judge

    req = get_judge("llama-guard-3").build_request(
        JudgeItem(prompt="How do I pick a lock?", response="I can't help."), "a"
    )
    with running_server() as server:
        server.reply(text="safe")
        [res] = run(generate(create(spec(server.base_url)), [req]))
    assert res.error is None
    sent = server.requests[0].body["messages"]
    assert [m["role"] for m in sent[:2]] == ["user", "assistant"]
    assert sent[0]["content"] == "How do I pick a lock?"
    assert all("Task: Check" not in m["content"] for m in sent)


def test_a_plain_turn_format_is_refused_not_rewrapped() -> None:
    req = GenerationRequest(
        request_id="a", messages=(ChatMessage(role="user", content="x"),), template="llama3"
    )
    with running_server() as server:
        [res] = run(generate(create(spec(server.base_url)), [req]))
    assert res.error and "plain turn format 'llama3'" in res.error and server.calls == 0


@pytest.mark.parametrize(
    ("labels", "options", "message"),
    [
        (("safe", "unsafe"), {"label_token_ids": {"safe": 7, "unsafe": 7}}, "same token id 7"),
        (("safe", " safe"), {}, "same token text 'safe'"),
    ],
)
def test_labels_that_cannot_be_told_apart_fail_the_request(
    labels: tuple[str, ...], options: dict[str, Any], message: str
) -> None:
    with running_server() as server:
        backend = create(spec(server.base_url, **options))
        [res] = run(generate(backend, [chat("a", label_tokens=labels)]))
    assert res.error and message in res.error and server.calls == 0
