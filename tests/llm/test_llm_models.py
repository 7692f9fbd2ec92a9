"""Language-model folders in the registry: checks, hashing, signing, what `models show` says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.llm import ADMIN, register

from appliance.errors import BadInput, Conflict, OperationFailed
from appliance.llm import tiny
from appliance.llm.folder import inspect_folder, materialize
from appliance.promotion.service import promote
from appliance.registry import import_folder, resolve
from appliance.storage.home import Home


def copy(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    dest = tmp_path / name
    shutil.copytree(src, dest)
    return dest


def test_inspect_reads_what_models_show_needs(tiny_model: Path) -> None:
    info = inspect_folder(tiny_model)
    sig = info.signature()
    assert sig["kind"] == "llm" and sig["model_type"] == "llama"
    assert sig["context_length"] == 128 and sig["vocab_size"] == 300
    assert 80_000 < sig["parameters"] < 200_000  # the ~100k-parameter model
    assert sig["chat_template"] is True
    names = {f.path for f in info.files}
    assert {"genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json"} <= names


@pytest.mark.parametrize("damage, names", [
    (lambda d: (d / "genai_config.json").unlink(), "genai_config.json"),
    (lambda d: (d / "tokenizer.json").write_text("{"), "tokenizer.json"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json"),
    (lambda d: (d / "model.onnx").write_bytes(b"not onnx at all"), "model.onnx"),
    (lambda d: (d / "model.onnx.data").write_bytes(b"short"), "model.onnx.data"),
    (lambda d: (d / "model.onnx.data").unlink(), "model.onnx.data"),
    (lambda d: (d / "genai_config.json").write_text("[1, 2"), "genai_config.json"),
])
def test_a_folder_that_is_no_model_exits_2_naming_the_file(
        tiny_model: Path, tmp_path: Path, runner, home: Home, damage, names: str) -> None:
    folder = copy(tiny_model, tmp_path)
    damage(folder)
    result = runner("models", "import", "chat", str(folder))
    assert result.exit_code == 2, result.output
    assert names in result.output
    with home.db() as db:  # nothing registered, no half-written version
        assert db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 0


def test_import_is_content_addressed_and_show_tells_the_model(
        tiny_model: Path, tmp_path: Path, runner, home: Home) -> None:
    first = runner("models", "import", "chat", str(tiny_model))
    assert first.exit_code == 0, first.output
    assert first.output.strip() == "chat@1"
    again = runner("models", "import", "chat", str(copy(tiny_model, tmp_path)))
    assert "chat@1" in again.output and "already registered" in again.output
    changed = copy(tiny_model, tmp_path, "changed")
    config = json.loads((changed / "genai_config.json").read_text())
    config["search"]["max_length"] = 64
    (changed / "genai_config.json").write_text(json.dumps(config))
    assert runner("models", "import", "chat", str(changed)).output.strip() == "chat@2"
    shown = runner("models", "show", "chat@1")
    assert shown.exit_code == 0, shown.output
    assert "kind llm (llama): context 128 tokens, vocabulary 300" in shown.output
    assert "parameters" in shown.output and "chat template: the model" in shown.output
    as_json = json.loads(runner("models", "show", "chat@1", "--json").output)
    assert as_json["model_version"]["signature"]["kind"] == "llm"


def test_tabular_and_language_versions_do_not_mix(tiny_model: Path, home: Home) -> None:
    from helpers.serving import mlp

    from appliance.onnxtools.models import signature_of
    from appliance.registry.importing import import_file

    with home.db() as db:
        import_folder(db, home.blobs, "chat", tiny_model, actor="t")
        data = mlp(1)
        with pytest.raises(Conflict, match="language model"):
            import_file(db, home.blobs, "chat", data, signature_of(data, "m"), actor="t")
        import_file(db, home.blobs, "tab", data, signature_of(data, "m"), actor="t")
        with pytest.raises(Conflict, match="tabular"):
            import_folder(db, home.blobs, "tab", tiny_model, actor="t")


def test_promotion_signs_the_folder_and_a_changed_file_is_refused(
        tiny_model: Path, home: Home, tmp_path: Path) -> None:
    ref = register(home, tiny_model)
    with home.db() as db:
        mv = resolve(db, ref)
        report = db.execute("SELECT gates FROM gate_reports ORDER BY id DESC LIMIT 1"
                            ).fetchone()[0]
    gates = {g["gate"]: g for g in json.loads(report)["gates"]}
    assert gates["llm_files"]["passed"] and gates["llm_generates"]["passed"]
    from appliance.serving.registry_source import RegistrySource

    source = RegistrySource(home)
    resolved = source.resolve("chat", None)
    assert resolved.signed and (Path(resolved.model) / "genai_config.json").is_file()
    # A model file changed in the blob store after promotion: the folder is not put back.
    manifest = json.loads(home.blobs.read_bytes(mv.onnx_digest))
    data_file = next(f for f in manifest["files"] if f["path"] == "model.onnx.data")
    blob = home.blobs.path(data_file["sha256"])
    blob.chmod(0o644)
    raw = bytearray(blob.read_bytes())
    raw[100] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises(OperationFailed, match="model.onnx.data"):
        source.resolve("chat", None)
    with pytest.raises(OperationFailed, match="model.onnx.data"):
        materialize(home.blobs, home.blobs.read_bytes(mv.onnx_digest), tmp_path / "out")
    source.close()


def test_an_unpromoted_language_model_is_never_loaded(tiny_model: Path, home: Home) -> None:
    from appliance.serving.registry_source import RegistrySource

    with home.db() as db:
        import_folder(db, home.blobs, "chat", tiny_model, actor="t")
    source = RegistrySource(home)
    with pytest.raises(OperationFailed, match="never passed promotion"):
        source.resolve("chat", 1)
    source.close()


def test_language_models_go_to_production_directly(tiny_model: Path, home: Home) -> None:
    register(home, tiny_model)
    with pytest.raises(BadInput, match="directly"):
        promote(home, "chat@1", ADMIN, to="canary")


def test_the_small_model_answers_its_facts(tiny_model: Path) -> None:
    import threading

    from appliance.llm.runtime import GenaiRuntime, Generation, Sampling

    runtime = GenaiRuntime(tiny_model, eos_token_ids=[1])
    done: list[Generation] = []
    all_done = threading.Event()

    class Sink:
        def tokens(self, generation: Generation, text: str) -> None:
            pass

        def finished(self, generation: Generation) -> None:
            done.append(generation)
            if len(done) == len(tiny.facts()):
                all_done.set()

    try:
        asked = []
        for question, answer in tiny.facts():
            g = Generation(runtime.encode(tiny.prompt_for(question)),
                           Sampling(max_tokens=16, temperature=0.0), Sink())
            runtime.submit(g)
            asked.append((g, answer))
        assert all_done.wait(60)
    finally:
        runtime.close()
    wrong = [(g.text, a) for g, a in asked if g.text.strip() != a]
    assert not wrong
    assert {g.path for g, _ in asked} == {"single", "batched"}  # the engine batched the rest
    assert all(g.finish_reason == "stop" and g.device_s > 0 for g, _ in asked)


def test_build_example_refuses_a_folder_that_holds_files(tmp_path: Path, runner) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    result = runner("llm", "build-example", str(tmp_path / "x"))
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_the_console_shows_a_language_model_version(tiny_model: Path, home: Home) -> None:
    from helpers.console import PASSWORD, login, make_app

    from appliance.audit.service import ensure_key
    from appliance.auth import users

    ensure_key(home, "t")
    with home.db() as db:
        users.add_user(db, "admin", "admin", PASSWORD, actor="t")
    register(home, tiny_model)
    client = make_app(home).test_client()
    login(client, "admin")
    page = client.get("/models/chat/1")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="llm-signature"' in html and "128 tokens" in html and "folder manifest" in html
    assert '<option value="shadow">' not in html  # language models go to production only


def test_chat_template_the_models_own_or_the_plain_one(tiny_model: Path, tmp_path: Path) -> None:
    from appliance.llm.chat import ChatTemplate, check_messages, plain_template

    messages = check_messages([{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    own = ChatTemplate(tiny_model)
    assert own.kind == "model"
    assert own.render(messages) == "system: Be brief.\nuser: Hi\nassistant:"
    plain = copy(tiny_model, tmp_path, "plain")
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    fallback = ChatTemplate(plain)
    assert fallback.kind == "plain" and fallback.render(messages) == plain_template(messages)
    assert inspect_folder(plain).signature()["chat_template"] is False
    strict = copy(tiny_model, tmp_path, "strict")
    (strict / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}")
    with pytest.raises(BadInput, match="user first"):
        ChatTemplate(strict).render(messages)
    with pytest.raises(BadInput, match="messages\\[1\\].content"):
        check_messages([{"role": "user", "content": "a"}, {"role": "user", "content": 3}])


def test_batched_answers_have_every_token_asked_for(tiny_model: Path) -> None:
    """The engine gives one token fewer than it is asked for, and stops one short of the
    context: asked for N, every answer has N, on either path, up to the whole context."""
    import threading

    from appliance.llm.runtime import GenaiRuntime, Generation, Sampling

    runtime = GenaiRuntime(tiny_model, eos_token_ids=[1])
    done: list[Generation] = []
    all_done = threading.Event()

    class Sink:
        def tokens(self, generation: Generation, text: str) -> None:
            pass

        def finished(self, generation: Generation) -> None:
            done.append(generation)
            if len(done) == 6:
                all_done.set()

    try:
        prompt = runtime.encode(tiny.prompt_for(tiny.facts()[0][0]))
        whole = runtime.context_length - len(prompt)
        asked = [Generation(prompt, Sampling(max_tokens=n, temperature=0.0, min_tokens=n),
                            Sink()) for n in (6, 6, 7, 9, whole, whole)]
        for g in asked:
            runtime.submit(g)
        assert all_done.wait(120)
    finally:
        runtime.close()
    assert [g.completion_tokens for g in asked] == [6, 6, 7, 9, whole, whole]
    assert all(g.finish_reason == "length" for g in asked)
    assert "batched" in {g.path for g in asked[:4]}


def test_the_single_path_reuses_its_generators_and_answers_the_same(tiny_model: Path) -> None:
    """A request that finds the model idle takes back the generator of an earlier one with
    the same search options (its length rounded up to 16 tokens): its answers are those of
    a fresh generator, after a request cancelled part-way too; a seeded request still gets
    a generator of its own."""
    from appliance.llm.runtime import CANCELLED, LENGTH, GenaiRuntime, Generation, Sampling

    class Sink:
        def tokens(self, generation: Generation, text: str) -> None:
            pass

        def finished(self, generation: Generation) -> None:
            pass

    runtime = GenaiRuntime(tiny_model, eos_token_ids=[1], threaded=False)

    def run(question: str, sampling: Sampling, cancel_after: int | None = None) -> Generation:
        g = Generation(runtime.encode(tiny.prompt_for(question)), sampling, Sink())
        runtime.submit(g)
        steps = 0
        while runtime.busy():
            if steps == cancel_after:
                runtime.cancel(g)
            runtime.step()
            steps += 1
        return g

    try:
        greedy = Sampling(max_tokens=16, temperature=0.0)
        questions = [q for q, _ in tiny.facts()]
        first = [run(q, greedy) for q in questions]
        assert [g.text.strip() for g in first] == [a for _, a in tiny.facts()]
        # prompts of 12 to 19 tokens and 16 more: generators of 32 and 48 tokens
        assert {g.path for g in first} == {"single"} and len(runtime._idle) == 2
        kept = dict(runtime._idle)
        cut = run(questions[0], greedy, cancel_after=3)
        assert cut.finish_reason == CANCELLED and 0 < cut.completion_tokens < 16
        again = [run(q, greedy) for q in questions]
        assert [g.text for g in again] == [g.text for g in first]
        assert all(runtime._idle[k] is g for k, g in kept.items())  # two served them all

        long = [run(questions[0], Sampling(max_tokens=n, temperature=0.0, min_tokens=n))
                for n in (9, 9, 5)]
        assert [g.completion_tokens for g in long] == [9, 9, 5]
        assert {g.finish_reason for g in long} == {LENGTH}
        assert long[0].text == long[1].text and long[0].text.startswith(long[2].text)

        seeded = [run(questions[1], Sampling(max_tokens=12, temperature=1.0, seed=7))
                  for _ in range(2)]
        assert seeded[0].text == seeded[1].text and seeded[0].completion_tokens > 0
        assert len(runtime._idle) == 4  # greedy, and min_tokens 9 and 5; none for the seed
    finally:
        runtime.close()


def test_generators_are_kept_only_for_a_small_cache(tmp_path: Path) -> None:
    from appliance.llm.runtime import IDLE_CACHE_BYTES, _cache_bytes

    config = {"model": {"decoder": {"num_hidden_layers": 2, "num_key_value_heads": 2,
                                    "head_size": 16}}}
    (tmp_path / "genai_config.json").write_text(json.dumps(config))
    assert _cache_bytes(tmp_path, 128) == 2 * 2 * 2 * 16 * 4 * 128
    config["model"]["decoder"] = {"num_hidden_layers": 32, "num_key_value_heads": 8,
                                  "head_size": 128}
    (tmp_path / "genai_config.json").write_text(json.dumps(config))
    assert _cache_bytes(tmp_path, 8192) > IDLE_CACHE_BYTES  # an 8B model: none kept
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {}}))
    assert _cache_bytes(tmp_path, 1) > IDLE_CACHE_BYTES  # unknown: none kept


def test_an_answer_not_streamed_is_decoded_at_its_end_to_the_same_text(
        tiny_model: Path) -> None:
    """Without stop strings an answer not streamed is decoded in one call when it ends:
    the same text as token by token, whole, cut at max_tokens, or cancelled part-way."""
    from appliance.llm.runtime import CANCELLED, GenaiRuntime, Generation, Sampling

    class Sink:
        def __init__(self, stream: bool) -> None:
            self.stream = stream
            self.pieces: list[str] = []

        def tokens(self, generation: Generation, text: str) -> None:
            self.pieces.append(text)

        def finished(self, generation: Generation) -> None:
            pass

    runtime = GenaiRuntime(tiny_model, eos_token_ids=[1], threaded=False)

    def run(question: str, stream: bool, max_tokens: int, cancel_after: int | None = None
            ) -> tuple[Generation, Sink]:
        sink = Sink(stream)
        g = Generation(runtime.encode(tiny.prompt_for(question)),
                       Sampling(max_tokens=max_tokens, temperature=0.0,
                                min_tokens=max_tokens if cancel_after else 0), sink)
        runtime.submit(g)
        steps = 0
        while runtime.busy():
            if steps == cancel_after:
                runtime.cancel(g)
            runtime.step()
            steps += 1
        return g, sink

    try:
        for question, answer in tiny.facts():
            for max_tokens in (16, 3):
                (plain, plain_sink), (streamed, streamed_sink) = (
                    run(question, False, max_tokens), run(question, True, max_tokens))
                assert plain.text == streamed.text == "".join(streamed_sink.pieces)
                assert plain.finish_reason == streamed.finish_reason
                assert len(plain_sink.pieces) == 1 < len(streamed_sink.pieces)
            assert plain.completion_tokens <= 3 and answer.startswith(plain.text.strip())
        (cut, _), (cut_streamed, _) = (run(tiny.facts()[0][0], False, 40, cancel_after=20),
                                       run(tiny.facts()[0][0], True, 40, cancel_after=20))
        assert cut.finish_reason == CANCELLED and cut.completion_tokens == 20
        assert cut.text == cut_streamed.text and len(cut.text) > 10
    finally:
        runtime.close()
