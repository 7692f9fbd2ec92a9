"""OpenAI's API on the serving daemon, against the real daemon and the small model."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
from pathlib import Path

import pytest
from helpers.llm import SlowRuntime, register, serve, wait_for
from helpers.serving import call, raw

from appliance.llm import tiny
from appliance.serving.http.transport import ServerThread
from appliance.storage.home import Home

QUESTION = "What is the capital of Veltria?"


def chat(server: ServerThread, body: dict, headers: dict | None = None):
    return call(server, "POST", "/v1/chat/completions", body, headers)


def ask(question: str = QUESTION, **extra) -> dict:
    return {"model": "chat", "messages": [{"role": "user", "content": question}], **extra}


def sse(server: ServerThread, path: str, body: dict) -> tuple[int, dict, list]:
    """The events of a streamed answer, parsed; the last is the literal '[DONE]'."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("POST", path, json.dumps(body).encode())
        resp = conn.getresponse()
        raw = resp.read().decode()
        headers = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    events = []
    for block in raw.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return resp.status, headers, events


def log_rows(home: Home) -> list[dict]:
    conn = sqlite3.connect(home.monitoring_db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM llm_requests ORDER BY id")]
    finally:
        conn.close()


def test_models_lists_the_served_language_model(served: ServerThread) -> None:
    status, _, doc = call(served, "GET", "/v1/models")
    assert status == 200 and doc["object"] == "list"
    [row] = doc["data"]
    assert row["id"] == "chat" and row["object"] == "model" and row["owned_by"] == "appliance"
    assert row["appliance"]["version"] == 1 and row["appliance"]["context_length"] == 128
    assert call(served, "GET", "/v1/models/chat")[2]["id"] == "chat"
    status, _, doc = call(served, "GET", "/v1/models/nope")
    assert status == 404 and doc["error"]["code"] == "model_not_found"


def test_chat_answers_with_usage_and_the_appliance_figures(served: ServerThread,
                                                           home: Home) -> None:
    status, _, doc = chat(served, ask(temperature=0))
    assert status == 200, doc
    assert doc["object"] == "chat.completion" and doc["id"].startswith("chatcmpl-")
    [choice] = doc["choices"]
    assert choice["message"] == {"role": "assistant", "content": " Orsk."}
    assert choice["finish_reason"] == "stop"
    usage = doc["usage"]
    assert usage["prompt_tokens"] > 5 and usage["completion_tokens"] >= 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    figures = doc["appliance"]
    assert figures["model_version"] == 1 and figures["device"] == "cpu"
    assert figures["cpu_seconds"] > 0 and figures["currency"] == "EUR"
    assert figures["cost"] == pytest.approx(figures["cpu_seconds"] * 3.6 / 3600, rel=1e-3,
                                            abs=1e-9)
    for key in ("queue_ms", "time_to_first_token_ms", "generation_ms", "e2e_ms"):
        assert figures[key] >= 0
    rows = wait_for(lambda: log_rows(home), what="the request-log row")
    row = rows[-1]
    assert (row["model"], row["version"], row["endpoint"], row["status"]) == ("chat", 1, "chat",
                                                                             200)
    assert row["prompt_tokens"] == usage["prompt_tokens"]
    assert row["completion_tokens"] == usage["completion_tokens"]
    assert row["finish_reason"] == "stop" and row["device"] == "cpu" and row["currency"] == "EUR"
    assert row["ttft_ms"] > 0 and row["e2e_ms"] >= row["ttft_ms"] and row["device_s"] > 0
    assert row["prompt"] is None and row["completion"] is None  # llm.log_text is off


def test_every_fact_comes_back_through_the_api(served: ServerThread) -> None:
    for question, answer in tiny.facts():
        doc = chat(served, ask(question, temperature=0, max_tokens=16))[2]
        assert doc["choices"][0]["message"]["content"].strip() == answer


def test_streamed_chat_is_server_sent_events_ending_in_done(served: ServerThread) -> None:
    status, headers, events = sse(served, "/v1/chat/completions",
                                  ask(stream=True, temperature=0,
                                      stream_options={"include_usage": True}))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == " Orsk."
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finishing] == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] >= 3
    assert usage_chunk["appliance"]["model_version"] == 1


def test_completions_endpoint_and_its_stream(served: ServerThread) -> None:
    prompt = tiny.prompt_for("What colour is the sky?")
    status, _, doc = call(served, "POST", "/v1/completions",
                          {"model": "chat", "prompt": prompt, "temperature": 0})
    assert status == 200 and doc["object"] == "text_completion"
    assert doc["choices"][0]["text"] == " blue." and doc["usage"]["prompt_tokens"] > 0
    _, _, events = sse(served, "/v1/completions",
                       {"model": "chat", "prompt": prompt, "temperature": 0, "stream": True})
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == " blue."


def test_stop_strings_max_tokens_and_seeded_sampling(served: ServerThread) -> None:
    doc = chat(served, ask(temperature=0, stop=["sk"]))[2]
    assert doc["choices"][0]["message"]["content"] == " Or"
    assert doc["choices"][0]["finish_reason"] == "stop"
    doc = chat(served, ask(temperature=0, max_completion_tokens=2))[2]
    assert doc["choices"][0]["finish_reason"] == "length"
    assert doc["usage"]["completion_tokens"] == 2
    doc = chat(served, ask(temperature=0, min_tokens=30, max_tokens=30))[2]
    assert doc["usage"]["completion_tokens"] == 30  # vLLM's min_tokens: no end before 30
    assert doc["choices"][0]["finish_reason"] == "length"
    seeded = [chat(served, ask("Tell me a story.", temperature=1.5, seed=7, max_tokens=20))[2]
              ["choices"][0]["message"]["content"] for _ in range(2)]
    assert seeded[0] == seeded[1]


@pytest.mark.parametrize("body, status, param, words", [
    ({"model": "chat"}, 400, "messages", "non-empty list"),
    ({"model": "chat", "messages": []}, 400, "messages", "non-empty list"),
    ({"model": "chat", "messages": [{"role": "user", "content": "  "}]}, 400, "messages",
     "empty"),
    ({"model": "chat", "messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "messages[0].role", "wizard"),
    ({"model": "chat", "messages": [{"role": "user"}]}, 400, "messages[0].content", "string"),
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model",
     "nope"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", "model"),
    ({**ask(), "max_tokens": 1000}, 400, "max_tokens", "at most"),
    ({**ask(), "max_tokens": 0}, 400, "max_tokens", "at least 1"),
    ({**ask(), "temperature": 9}, 400, "temperature", "<= 2"),
    ({**ask(), "n": 2}, 400, "n", "one answer"),
    ({**ask(), "min_tokens": 9, "max_tokens": 5}, 400, "min_tokens", "more than"),
    ({**ask(), "stop": [1]}, 400, "stop", "strings"),
    ({**ask(), "stream": "yes"}, 400, "stream", "true or false"),
    ({**ask(), "stream_options": {"include_usage": True}}, 400, "stream_options", "stream"),
])
def test_bad_requests_get_openai_errors_and_the_daemon_keeps_serving(
        served: ServerThread, body: dict, status: int, param: str, words: str) -> None:
    got, _, doc = chat(served, body)
    assert got == status, doc
    error = doc["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"
    assert chat(served, ask(temperature=0))[0] == 200


def test_a_prompt_longer_than_the_context_names_the_limit_and_the_count(
        served: ServerThread) -> None:
    status, _, doc = chat(served, ask("capital " * 200))
    assert status == 400
    message = doc["error"]["message"]
    assert "context is 128 tokens" in message and "the prompt is" in message
    assert doc["error"]["code"] == "context_length_exceeded"


def test_malformed_and_oversized_bodies(served: ServerThread) -> None:
    status, _, doc = call(served, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in doc["error"]["message"]
    answer = raw(served, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                         b"content-length: 73400320\r\n\r\n{")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "request_too_large"
    status, _, doc = call(served, "GET", "/v1/chat/completions")
    assert status == 405 and "POST" in doc["error"]["message"]
    assert chat(served, ask(temperature=0))[0] == 200


def test_the_openai_client_works_unchanged(served: ServerThread, home: Home) -> None:
    from openai import AuthenticationError, OpenAI

    from appliance.auth import tokens, users

    with home.db() as db:
        users.add_user(db, "app", "operator", "a long enough password 1", actor="tester")
        key = tokens.create_token(db, "app", "chat client", ["infer"], actor="tester").token
    base = f"http://{served.host}:{served.port}/v1"
    with OpenAI(base_url=base, api_key="apl_not-a-token", max_retries=0) as stranger:
        with pytest.raises(AuthenticationError):
            stranger.models.list()
    client = OpenAI(base_url=base, api_key=key, max_retries=0)
    try:
        assert [m.id for m in client.models.list()] == ["chat"]
        answer = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": QUESTION}], temperature=0)
        assert answer.choices[0].message.content == " Orsk."
        assert answer.usage is not None and answer.usage.completion_tokens >= 3
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": QUESTION}], temperature=0,
            stream=True, stream_options={"include_usage": True})
        pieces, usage = [], None
        for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(pieces) == " Orsk." and usage is not None
        text = client.completions.create(model="chat", prompt=tiny.prompt_for(QUESTION),
                                         temperature=0)
        assert text.choices[0].text == " Orsk."
        from openai import NotFoundError

        with pytest.raises(NotFoundError):
            client.chat.completions.create(model="nope",
                                           messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()


def test_prometheus_metrics_after_vllm(served: ServerThread) -> None:
    chat(served, ask(temperature=0))
    _, _, text = call(served, "GET", "/metrics")
    text = text.decode()
    for name in ("appliance_llm_time_to_first_token_seconds_bucket",
                 "appliance_llm_inter_token_latency_seconds_bucket",
                 "appliance_llm_e2e_request_latency_seconds_count",
                 "appliance_llm_request_queue_time_seconds_sum",
                 'appliance_llm_prompt_tokens_total{model="chat",version="1"}',
                 'appliance_llm_generation_tokens_total{model="chat",version="1"}',
                 'appliance_llm_num_requests_running{model="chat",version="1"} 0',
                 'appliance_llm_num_requests_waiting{model="chat",version="1"} 0',
                 "appliance_llm_cost_total"):
        assert name in text, name


def test_tabular_and_language_endpoints_refuse_each_other(served: ServerThread) -> None:
    status, _, doc = call(served, "POST", "/v2/models/chat/infer", {"inputs": []})
    assert status == 400 and "/v1/chat/completions" in doc["error"]


def test_a_client_that_goes_away_frees_its_slot(home: Home, tiny_model: Path) -> None:
    register(home, tiny_model)
    server = serve(home, runtime=SlowRuntime)
    try:
        wait_for(lambda: call(server, "GET", "/v1/models")[2]["data"], what="chat served")
        # Seven tokens at 0.05 s a step; the client leaves after the first.
        body = json.dumps(ask(stream=True, temperature=0)).encode()
        with socket.create_connection((server.host, server.port), timeout=10) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                         b"content-length: %d\r\n\r\n%b" % (len(body), body))
            seen = b""
            while b"data: " not in seen:  # the stream began
                chunk = conn.recv(65536)
                assert chunk, seen
                seen += chunk
        engine = server.app.engine
        wait_for(lambda: engine.llm_load()[("chat", "1")] == (0, 0), timeout=10,
                 what="the slot to free")
        row = wait_for(lambda: log_rows(home), what="the request-log row")[-1]
        assert row["finish_reason"] == "client_gone" and row["completion_tokens"] < 7
    finally:
        server.stop()


def test_a_full_queue_answers_503_with_retry_after_and_the_rest_finish(
        home: Home, tiny_model: Path) -> None:
    import threading

    register(home, tiny_model)
    server = serve(home, runtime=SlowRuntime, llm__queue_capacity=1)
    try:
        wait_for(lambda: call(server, "GET", "/v1/models")[2]["data"], what="chat served")
        engine = server.app.engine
        slots = engine.served_llm("chat").runtime.slots
        # Every slot busy and one request waiting: 20 tokens at 0.05 s a step each.
        results: list[int] = []
        body = ask(temperature=0, min_tokens=20, max_tokens=20)
        def one() -> None:
            results.append(chat(server, body)[0])

        threads = [threading.Thread(target=one)
                   for _ in range(slots + 1)]
        for t in threads:
            t.start()
        wait_for(lambda: engine.llm_load()[("chat", "1")] == (slots, 1), timeout=30,
                 what="every slot busy and one request waiting")
        status, headers, doc = chat(server, body)
        assert status == 503 and headers["retry-after"] == "1"
        assert doc["error"]["type"] == "server_error" and doc["error"]["code"] == "overloaded"
        assert "llm.queue_capacity" in doc["error"]["message"]
        for t in threads:
            t.join(60)
        assert results == [200] * (slots + 1)  # those taken in all finish
    finally:
        server.stop()


class VerySlowRuntime(SlowRuntime):
    step_s = 0.3


def test_a_request_over_its_time_is_stopped_with_504(home: Home, tiny_model: Path) -> None:
    register(home, tiny_model)
    server = serve(home, runtime=VerySlowRuntime, llm__request_timeout_s=1.0)
    try:
        wait_for(lambda: call(server, "GET", "/v1/models")[2]["data"], what="chat served")
        # Seven tokens at 0.3 s a step: past the one-second limit.
        status, _, doc = chat(server, ask(temperature=0))
        assert status == 504 and doc["error"]["type"] == "timeout_error"
        assert "llm.request_timeout_s" in doc["error"]["message"]
        assert server.app.engine.llm_load()[("chat", "1")] == (0, 0)
    finally:
        server.stop()


def test_promotion_and_rollback_swap_the_served_version(served: ServerThread, home: Home,
                                                       tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from helpers.llm import ADMIN

    from appliance.promotion.service import rollback

    changed = tmp_path / "v2"
    shutil.copytree(tiny_model, changed)
    config = json.loads((changed / "genai_config.json").read_text())
    config["search"]["max_length"] = 100
    (changed / "genai_config.json").write_text(json.dumps(config))
    ref = register(home, changed)
    assert ref == "chat@2"

    def served_version() -> int:
        return call(served, "GET", "/v1/models/chat")[2]["appliance"]["version"]

    wait_for(lambda: served_version() == 2, what="chat@2 to be served")
    doc = chat(served, ask(temperature=0))[2]
    assert doc["system_fingerprint"] == "chat@2" and doc["appliance"]["model_version"] == 2
    assert doc["choices"][0]["message"]["content"] == " Orsk."
    rollback(home, "chat", ADMIN, reason="test")
    wait_for(lambda: served_version() == 1, what="chat@1 to be served again")
    assert chat(served, ask(temperature=0))[2]["appliance"]["model_version"] == 1
    engine = served.app.engine
    wait_for(lambda: ("chat", 2) not in engine.models, what="chat@2 to be unloaded")


def test_a_model_whose_process_dies_is_loaded_again(served: ServerThread) -> None:
    import os
    import signal

    engine = served.app.engine
    first = engine.served_llm("chat").runtime
    os.kill(first.pid, signal.SIGKILL)

    def answers_again() -> bool:
        status, _, doc = chat(served, ask(temperature=0))
        if status != 200:  # 503 while it is loaded again
            assert status == 503, doc
            return False
        return doc["choices"][0]["message"]["content"] == " Orsk."

    wait_for(answers_again, timeout=60, what="the model to be loaded again")
    assert engine.served_llm("chat").runtime is not first
    assert engine.metrics.load_failures[("chat", "1")] == 1
