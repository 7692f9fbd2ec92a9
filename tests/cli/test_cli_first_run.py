"""What a new user reads on the first run: a way to the first admin, times as times,
an audit verdict that says what a signature covers, plain words for a missing driver."""

from __future__ import annotations

import re

import pytest

from appliance.cli.audit import verified_line


def test_init_and_users_list_lead_to_the_first_admin(runner) -> None:  # type: ignore[no-untyped-def]
    first = runner("init")
    assert first.exit_code == 0
    assert "no admin yet" in first.output and "users add NAME --role admin" in first.output
    empty = runner("users", "list")
    assert empty.exit_code == 0 and "no users yet" in empty.output
    assert "--role admin" in empty.output
    added = runner("users", "add", "ada", "--role", "admin", "--generate-password")
    assert added.exit_code == 0, added.output
    again = runner("init")
    assert again.exit_code == 0 and "no admin yet" not in again.output
    assert "ada" in runner("users", "list").output


def test_jobs_show_prints_times_as_times(runner, db) -> None:  # type: ignore[no-untyped-def]
    submitted = runner("jobs", "submit", "noop")
    assert submitted.exit_code == 0, submitted.output
    job_id = int(re.search(r"\d+", submitted.output).group())
    db.execute("UPDATE jobs SET heartbeat_at = ?, lease_expires = ? WHERE id = ?",
               [1_800_000_000.25, 1_800_000_030.0, job_id])
    db.conn.commit()
    out = runner("jobs", "show", str(job_id)).output
    assert "heartbeat_at: 2027-01-15T08:00:00+00:00" in out, out
    assert "lease_expires: 2027-01-15T08:00:30+00:00" in out, out
    assert "1800000000" not in out
    raw = runner("jobs", "show", str(job_id), "--json").output
    assert "1800000000.25" in raw  # machine-readable output keeps the number


def test_audit_verify_says_what_was_verified_and_what_is_signed(runner) -> None:  # type: ignore[no-untyped-def]
    assert runner("init").exit_code == 0
    out = runner("audit", "verify").output.strip()
    assert out == "ok: verified 1 entry (hashes and links); 1 is covered by 1 signed checkpoint"
    assert verified_line(51, 1, 1) == (
        "ok: verified 51 entries (hashes and links); 1 is covered by 1 signed checkpoint, "
        "the newest 50 are not signed yet (the next checkpoint signs them)")
    assert verified_line(51, 51, 2) == (
        "ok: verified 51 entries (hashes and links); all 51 are covered by 2 signed checkpoints")
    assert "no signed checkpoint" in verified_line(3, 0, 0)


@pytest.mark.parametrize("code,words", [
    (12, "no NVIDIA driver found"),
    (9, "driver is installed but not loaded"),
])
def test_gpu_without_a_driver_says_so_in_plain_words(runner, monkeypatch, code, words) -> None:  # type: ignore[no-untyped-def]
    import pynvml

    def no_driver() -> None:
        raise pynvml.NVMLError(code)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    out = runner("gpu").output
    assert words in out and "Shared Library" not in out, out
