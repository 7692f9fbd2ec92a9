"""Configuration and the CLI's contract: exit codes, one-line errors, --home precedence."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.config import SETTINGS, load_config, parse_config, resolve_home
from appliance.errors import ConfigError
from appliance.gpu.inventory import GPU, StaticSource
from appliance.system import doctor


def test_defaults_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPLIANCE_CONFIG")
    cfg = load_config(None) if not Path("/etc/appliance/appliance.yaml").exists() else parse_config({})
    assert cfg["storage.busy_timeout_ms"] == 5000
    assert set(cfg) == {s.name for s in SETTINGS}


def test_every_default_is_a_valid_value() -> None:
    # A default that its own check rejects would make an explicit, equal value an error.
    for s in SETTINGS:
        assert parse_config({s.name: s.default})[s.name] == s.default, s.name


def test_nested_and_dotted_keys(tmp_path: Path) -> None:
    cfg = parse_config({"storage": {"busy_timeout_ms": 900}, "doctor.blob_sample": 3})
    assert cfg["storage.busy_timeout_ms"] == 900 and cfg["doctor.blob_sample"] == 3
    assert cfg.from_file == {"storage.busy_timeout_ms", "doctor.blob_sample"}


@pytest.mark.parametrize(
    "data, words",
    [
        ({"storage": {"busy_timout_ms": 1}}, ["unknown config key 'storage.busy_timout_ms'",
                                             "did you mean 'storage.busy_timeout_ms'"]),
        ({"nonsense": 1}, ["unknown config key 'nonsense'"]),
        ({"serving": {"sample_rate": 0.5}}, ["config key 'serving.sample_rate' was removed",
                                              "set serving.log_rows_per_second instead"]),
        ({"log_level": "loud"}, ["'log_level'", "one of debug, info, warning, error"]),
        ({"storage": {"busy_timeout_ms": "fast"}}, ["'storage.busy_timeout_ms'", "an integer"]),
        ({"storage": {"busy_timeout_ms": 1}}, ["'storage.busy_timeout_ms'", ">= 100"]),
        ({"doctor": {"blob_sample": True}}, ["'doctor.blob_sample'"]),
        ([1, 2], ["must be a mapping"]),
    ],
)
def test_bad_config_names_the_key(data: object, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    for word in words:
        assert word in str(err.value)


def test_config_file_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("home: [unclosed\n  - x: : y\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "line" in str(err.value)


def test_home_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config({"home": str(tmp_path / "from-config")})
    assert resolve_home(cfg) == tmp_path / "from-config"
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "from-env"))
    assert resolve_home(cfg) == tmp_path / "from-env"
    assert resolve_home(cfg, tmp_path / "from-flag") == tmp_path / "from-flag"
    assert resolve_home(parse_config({}), None) == tmp_path / "from-env"


def _run(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), env=env)


def test_init_twice_then_doctor(tmp_path: Path) -> None:
    home = tmp_path / "h"
    first = _run("--home", str(home), "init")
    assert first.exit_code == 0, first.output
    assert "initialised" in first.output
    second = _run("--home", str(home), "init")
    assert second.exit_code == 0 and "already initialised" in second.output
    doc = _run("--home", str(home), "doctor", "--json")
    assert doc.exit_code == 0, doc.output
    report = json.loads(doc.output)
    names = {c["name"] for c in report["checks"]}
    assert {"appliance.db integrity", "appliance.db migrations", "blob store", "permissions",
            "free disk", "gpus", "onnxruntime providers", "onnxruntime-genai"} <= names
    genai = next(c for c in report["checks"] if c["name"] == "onnxruntime-genai")
    assert genai["ok"] and "language models run on the CPU" in genai["detail"]
    assert report["ok"] is True


def test_app_home_env_is_used(tmp_path: Path) -> None:
    result = _run("init", env={"APPLIANCE_HOME": str(tmp_path / "envhome")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envhome" / "appliance.db").is_file()


def test_doctor_on_a_missing_home_fails_with_advice(tmp_path: Path) -> None:
    result = _run("--home", str(tmp_path / "nothing"), "doctor")
    assert result.exit_code == 1
    assert "appliance --home" in result.output and "init" in result.output


def test_doctor_names_a_corrupt_database(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert _run("--home", str(home), "init").exit_code == 0
    (home / "appliance.db-wal").unlink(missing_ok=True)
    (home / "appliance.db-shm").unlink(missing_ok=True)
    (home / "appliance.db").write_bytes(b"garbage" * 1000)
    result = _run("--home", str(home), "doctor")
    assert result.exit_code == 1
    assert f"{home / 'appliance.db'} is not a usable appliance database" in result.output
    assert "monitoring.db integrity: ok" in result.output  # one broken part hides nothing else


def test_doctor_names_a_damaged_blob(tmp_path: Path) -> None:
    from appliance.storage.blobs import BlobStore

    home = tmp_path / "h"
    assert _run("--home", str(home), "init").exit_code == 0
    store = BlobStore(home / "blobs")
    digest = store.put_bytes(b"model bytes")
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"model bytez")
    result = _run("--home", str(home), "doctor")
    assert result.exit_code == 1
    assert "FAIL blob store" in result.output and digest in result.output


def test_bad_config_is_exit_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  busy_timeout_ms: soon\n")
    result = _run("--config", str(cfg), "--home", str(tmp_path / "h"), "init")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "storage.busy_timeout_ms" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "h").exists()  # nothing half-done


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    result = _run("--config", str(tmp_path / "nope.yaml"), "config", "show")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_config_show(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("doctor:\n  blob_sample: 7\n")
    result = _run("--config", str(cfg), "config", "show", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["settings"]["doctor.blob_sample"] == 7
    assert data["source"] == str(cfg)
    text = _run("--config", str(cfg), "config", "show").output
    assert "doctor.blob_sample: 7  # file" in text


def test_usage_error_is_exit_2() -> None:
    assert _run("no-such-command").exit_code == 2
    assert _run("init", "--bogus").exit_code == 2


def test_help_and_version() -> None:
    result = _run("--help")
    assert result.exit_code == 0 and "init" in result.output and "doctor" in result.output
    assert _run("--version").exit_code == 0


@pytest.mark.parametrize("text", ["queue:\n  lease_s: .nan\n", "queue:\n  timeout_s: .inf\n",
                                  "serving:\n  poll_interval_s: .nan\n"])
def test_a_non_finite_number_is_refused(tmp_path: Path, text: str) -> None:
    # NaN compares false with every bound, so without a check it slipped through as a
    # lease of NaN seconds (a job leased forever or never).
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match="bad value"):
        load_config(cfg)


def test_doctor_reads_the_configured_gpu_inventory_and_ignores_stray_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As a development checkout: no recorded profile (an installed bundle records one).
    from appliance.system import doctor

    monkeypatch.setattr(doctor, "installed_profile_file", lambda: tmp_path / "no-profile")
    home = tmp_path / "h"
    assert _run("--home", str(home), "init").exit_code == 0
    (home / "blobs" / "sha256" / "README").write_text("not a blob")  # a stray file
    inventory = tmp_path / "gpus.json"
    inventory.write_text(json.dumps({"gpus": [{"name": "Sim A100", "memory_total_mb": 40960}]}))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"gpu:\n  inventory_file: {inventory}\n")
    result = _run("--config", str(cfg), "--home", str(home), "doctor")
    assert result.exit_code == 0, result.output
    assert "ok   gpus: 1 found, driver simulated (0: Sim A100 40960 MiB)" in result.output
    # A development checkout records no profile; its CPU build of torch says what it means.
    assert "ok   bundle profile: development install, profile not recorded" in result.output
    assert "ok   torch: 2.13.0+cpu, a CPU build: trains on the CPU only, not on the 1 GPU " \
           "here" in result.output
    assert "ok   blob store: empty" in result.output


def _gpus(n: int) -> StaticSource:
    return StaticSource([GPU(i, f"GPU-{i}", "Sim H100", 80 * 2**30, 0, 0) for i in range(n)])


@pytest.mark.parametrize(
    "recorded, gpus, ok, detail",
    [
        ("cpu\n", 2, False, "cpu build on a host with 2 GPUs: torch trains on the CPU only; "
                            "install the cuda bundle"),
        ("cpu\n", 0, True, "cpu build, and no GPU here"),
        ("cuda\n", 1, True, "cuda build, 1 GPU here"),
        ("cuda\n", 0, True, "cuda build on a host without a GPU: it works, on the CPU "
                            "(the cpu bundle is smaller)"),
        (None, 2, True, "development install, profile not recorded"),
    ],
)
def test_doctor_judges_the_bundles_profile_against_the_gpus(
        home, config, tmp_path: Path, recorded: str | None, gpus: int, ok: bool,  # type: ignore[no-untyped-def]
        detail: str) -> None:
    profile = tmp_path / "share" / "appliance" / "profile"
    if recorded is not None:
        profile.parent.mkdir(parents=True)
        profile.write_text(recorded)
    checks = doctor.run_checks(home, config, gpu_source=_gpus(gpus), profile_file=profile)
    found = next(c for c in checks if c.name == "bundle profile")
    assert (found.ok, found.detail) == (ok, detail)
    # It stands after the GPUs and before the libraries that use them.
    names = [c.name for c in checks]
    assert names.index("gpus") < names.index("bundle profile") < names.index("torch") < \
        names.index("onnxruntime providers")


def test_an_unknown_recorded_profile_fails(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    profile.write_text("tpu\n")
    check = doctor._profile(_gpus(0).read(), profile)
    assert not check.ok and check.detail == f"{profile} names an unknown profile 'tpu'; " \
        "reinstall the bundle"


def _fake_torch(cuda: str | None, available: bool, count: int) -> SimpleNamespace:
    return SimpleNamespace(
        __version__="2.13.0" if cuda else "2.13.0+cpu", version=SimpleNamespace(cuda=cuda),
        cuda=SimpleNamespace(is_available=lambda: available, device_count=lambda: count))


@pytest.mark.parametrize(
    "torch, gpus, ok, detail",
    [
        (_fake_torch("13.0", True, 2), 2, True, "2.13.0 (CUDA 13.0) sees 2 of 2 GPUs"),
        (_fake_torch("13.0", False, 0), 2, False,
         "2.13.0 (CUDA 13.0) does not see the 2 GPUs NVML found: the driver (simulated) "
         "must support CUDA 13.0"),
        (_fake_torch("13.0", False, 0), 0, True, "2.13.0 (CUDA 13.0): no GPU here, trains on the CPU"),
        (_fake_torch(None, False, 0), 1, True,
         "2.13.0+cpu, a CPU build: trains on the CPU only, not on the 1 GPU here"),
        (_fake_torch(None, False, 0), 0, True, "2.13.0+cpu, a CPU build: trains on the CPU"),
    ],
)
def test_doctor_says_whether_torch_sees_the_gpus(monkeypatch: pytest.MonkeyPatch,
                                                 torch: SimpleNamespace, gpus: int, ok: bool,
                                                 detail: str) -> None:
    monkeypatch.setitem(sys.modules, "torch", torch)
    check = doctor._torch(_gpus(gpus).read())
    assert (check.name, check.ok, check.detail) == ("torch", ok, detail)
