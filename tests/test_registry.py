"""Editing flows under a running service: new calls hear the edit, calls in progress stay on
the version they started with, and a broken edit never reaches a caller."""

from __future__ import annotations

import logging
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ivr import create_app
from ivr.config import Settings
from ivr.registry import FlowRegistry
from tests.conftest import SUNDAY, call_params, healthz_details, signed


def said(client: FlaskClient, path: str, **params: str) -> tuple[list[str], str]:
    """What the caller hears, and the next action path."""
    r = signed(client, path, call_params(**params))
    assert r.status_code == 200
    root = ET.fromstring(r.get_data(as_text=True))
    action = next((el.get("action", "") for el in root.iter() if el.get("action")), "")
    parts = urlsplit(action)
    return [el.text or "" for el in root.iter("Say")], f"{parts.path}?{parts.query}"


def edit(flows_dir: Path, old: str, new: str) -> None:
    path = flows_dir / "mini.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    stamp = path.stat().st_mtime_ns + 5_000_000_000  # a later mtime, whatever the clock says
    os.utime(path, ns=(stamp, stamp))


def reloaded(app: Flask) -> None:
    app.extensions["ivr"].registry.refresh(force=True)


def test_an_edit_reaches_new_calls_and_not_calls_in_progress(
    app: Flask, client: FlaskClient, flows_dir: Path
) -> None:
    heard, in_progress = said(client, "/twilio/voice")
    assert heard[0] == "Здравствуйте"
    edit(flows_dir, "До свидания", "Всего доброго")
    edit(flows_dir, "prompt: {ru: Здравствуйте,", "prompt: {ru: Добрый день,")
    reloaded(app)
    heard_new, _ = said(client, "/twilio/voice")
    assert heard_new[0] == "Добрый день"
    # The first call goes on with the version it started on: its goodbye is unchanged.
    heard, nxt = said(client, in_progress, Digits="1")
    heard, _ = said(client, nxt, RecordingSid="RE1", Digits="#")
    assert heard == ["До свидания"]


def test_a_broken_edit_keeps_the_last_good_version(
    app: Flask, client: FlaskClient, flows_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = healthz_details(client)["flows"]["hotline"]
    with caplog.at_level(logging.WARNING):
        edit(flows_dir, "next: lang", "next: lnag")
        reloaded(app)
    assert "still serving version " + before["version"] in caplog.text
    assert "mini.yaml:" in caplog.text and "no step named `lnag`" in caplog.text
    heard, _ = said(client, "/twilio/voice")
    assert heard[0] == "Здравствуйте"
    health = healthz_details(client)
    assert health["flows"]["hotline"] == dict(before, stale=True)
    assert health["status"] == "degraded"
    assert any("did you mean `lang`?" in p for p in health["flow_problems"])
    edit(flows_dir, "next: lnag", "next: lang")
    reloaded(app)
    assert healthz_details(client)["flows"]["hotline"]["stale"] is False


def test_the_registry_notices_edits_by_itself(flows_dir: Path, tmp_path: Path) -> None:
    """A background thread reloads; the reading side never does (it only reads a snapshot)."""
    registry = FlowRegistry(flows_dir, tmp_path / "archive", interval=0.1)
    first = registry.current("hotline")
    edit(flows_dir, "Здравствуйте", "Привет")
    deadline = time.monotonic() + 5
    while registry.current("hotline") is first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.current("hotline").version != first.version
    assert registry._watcher is not None and registry._watcher.name == "flow-reloader"


def test_a_request_never_loads_flows(
    flows_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the current flows is a snapshot read, even right after an edit."""
    registry = FlowRegistry(flows_dir, tmp_path / "archive", interval=0)
    edit(flows_dir, "Здравствуйте", "Привет")

    def no_loading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a request read the flow folder")

    monkeypatch.setattr("ivr.registry.load_set", no_loading)
    monkeypatch.setattr(FlowRegistry, "_fingerprint", no_loading)
    for _ in range(3):
        assert registry.current("hotline").version
        assert registry.get("hotline", None) is registry.current("hotline")
        assert [s.id for s in registry.status()] == ["hotline"]


def test_another_process_answers_a_call_started_on_an_older_version(
    settings: Settings, flows_dir: Path
) -> None:
    """A call that began in one worker goes on in a worker started after the edit."""
    first = create_app(settings, clock=lambda: SUNDAY)
    with first.test_client() as client:
        _, in_progress = said(client, "/twilio/voice")
    edit(flows_dir, "До свидания", "Всего доброго")
    second = create_app(settings, clock=lambda: SUNDAY)  # fresh process memory, same instance
    with second.test_client() as client:
        heard, nxt = said(client, in_progress, Digits="1")
        heard, _ = said(client, nxt, RecordingSid="RE1", Digits="#")
        assert heard == ["До свидания"]
        heard, nxt = said(client, "/twilio/voice")
        heard, nxt = said(client, nxt, Digits="1")
        heard, _ = said(client, nxt, RecordingSid="RE1", Digits="#")
        assert heard == ["Всего доброго"]


def test_a_lost_archive_moves_the_call_to_the_current_version(
    settings: Settings, flows_dir: Path
) -> None:
    app = create_app(settings, clock=lambda: SUNDAY)
    with app.test_client() as client:
        _, in_progress = said(client, "/twilio/voice")
    edit(flows_dir, "До свидания", "Всего доброго")
    for f in (settings.instance_dir / "flow-versions").iterdir():
        f.unlink()
    fresh = create_app(settings, clock=lambda: SUNDAY)
    with fresh.test_client() as client:
        heard, nxt = said(client, in_progress, Digits="1")
        heard, _ = said(client, nxt, RecordingSid="RE1", Digits="#")
        assert heard == ["Всего доброго"]


def test_a_start_with_a_broken_entry_flow_serves_the_last_good_version(
    settings: Settings, flows_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The newest archived version is the one served last, even when that was a revert."""
    registry = FlowRegistry(flows_dir, settings.instance_dir / "flow-versions", interval=0)
    first = registry.current("hotline").version
    edit(flows_dir, "Здравствуйте", "Привет")
    registry.refresh()
    second = registry.current("hotline").version
    edit(flows_dir, "Привет", "Здравствуйте")  # back to the first version (archived before)
    registry.refresh()
    assert registry.current("hotline").version == first != second
    edit(flows_dir, "next: lang", "next: lnag")
    with caplog.at_level(logging.WARNING):
        app = create_app(settings, clock=lambda: SUNDAY)  # a restart: nothing in memory
    assert f"serving the last good version {first} from the archive" in caplog.text
    assert "no step named `lnag`" in caplog.text
    with app.test_client() as client:
        heard, _ = said(client, "/twilio/voice")
        assert heard[0] == "Здравствуйте"
        health = healthz_details(client)
    assert health["flows"]["hotline"] == {
        "version": first, "file": "mini.yaml", "stale": True, "archived": True}
    assert health["status"] == "degraded" and health["entry_flow"]["ok"] is True
    # Fixing the file ends it, as a fix does in a process that saw the file good.
    edit(flows_dir, "next: lnag", "next: lang")
    app.extensions["ivr"].registry.refresh()
    with app.test_client() as client:
        assert healthz_details(client)["flows"]["hotline"]["stale"] is False


def test_a_start_with_an_unreadable_entry_flow_serves_it_from_the_archive(
    settings: Settings, flows_dir: Path
) -> None:
    """Even when the broken file's `id` cannot be read (or the file is gone)."""
    FlowRegistry(flows_dir, settings.instance_dir / "flow-versions", interval=0)
    (flows_dir / "mini.yaml").write_text("id: [" + "[" * 100_000, encoding="utf-8")
    app = create_app(settings, clock=lambda: SUNDAY)
    with app.test_client() as client:
        heard, _ = said(client, "/twilio/voice")
        assert heard[0] == "Здравствуйте"
        assert healthz_details(client)["flows"]["hotline"]["archived"] is True


def test_versions_no_call_can_be_on_are_forgotten_and_stay_archived(
    flows_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = FlowRegistry(flows_dir, tmp_path / "archive", interval=0)
    old = registry.current("hotline").version
    edit(flows_dir, "Здравствуйте", "Привет")
    registry.refresh()
    new = registry.current("hotline").version
    assert ("hotline", old) in registry._versions  # calls may still be on it
    registry.refresh()
    assert ("hotline", old) in registry._versions
    monkeypatch.setattr("ivr.registry.CALL_LIMIT", 0.0)  # ...4 hours later
    registry.refresh()
    assert set(registry._versions) == {("hotline", new)}
    assert registry.get("hotline", old).version == old  # from the archive, if ever needed


def test_a_bug_in_loading_never_stops_a_process_or_its_current_flows(
    flows_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = FlowRegistry(flows_dir, tmp_path / "archive", interval=0)
    serving = registry.current("hotline")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RecursionError("a bug")

    monkeypatch.setattr("ivr.registry.load_set", broken)
    edit(flows_dir, "Здравствуйте", "Привет")
    with caplog.at_level(logging.ERROR):
        registry.refresh()
        fresh = FlowRegistry(flows_dir, tmp_path / "archive", interval=0)
    assert registry.current("hotline") is serving
    assert "reloading the flows failed" in caplog.text
    assert fresh.status() == []


def test_a_forked_worker_watches_the_folder_itself(flows_dir: Path, tmp_path: Path) -> None:
    """gunicorn with preload (or any fork after the app was made): the child has no watcher
    thread of its parent's, so it starts its own at its first request."""
    registry = FlowRegistry(flows_dir, tmp_path / "archive", interval=0.1)
    first = registry.current("hotline").version
    pid = os.fork()
    if pid == 0:  # the child: report by exit code only
        code = 1
        try:
            if registry._watcher is None and registry.current("hotline").version == first:
                edit(flows_dir, "Здравствуйте", "Привет")
                deadline = time.monotonic() + 5
                while registry.current("hotline").version == first:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                else:
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_reload_reads_only_the_files_that_changed(
    flows_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big or broken file that stays in the folder is read once, not at every edit."""
    import ivr.loader

    read: list[str] = []
    parse = ivr.loader.parse_flow

    def counting(text: str, file: str, *args: object) -> ivr.loader.Parsed:
        read.append(os.path.basename(file))
        return parse(text, file, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ivr.loader, "parse_flow", counting)
    registry = FlowRegistry(flows_dir, tmp_path / "archive", interval=0)
    (flows_dir / "big.yaml").write_text("id: big\n" + "".join(f"x{i}: 1\n" for i in range(5000)))
    registry.refresh()
    assert read == ["mini.yaml", "big.yaml"]
    edit(flows_dir, "Здравствуйте", "Привет")
    registry.refresh()
    assert read[2:] == ["mini.yaml"]
    assert any("more problems from here on are not shown" in str(p) for p in registry.problems)
    assert registry.current("hotline").version != ""
