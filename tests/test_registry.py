"""Editing flows under a running service: new calls hear the edit, calls in progress stay on
the version they started with, and a broken edit never reaches a caller."""

from __future__ import annotations

import logging
import os
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
    registry = FlowRegistry(flows_dir, tmp_path / "archive", interval=0)
    first = registry.current("hotline").version
    edit(flows_dir, "Здравствуйте", "Привет")
    assert registry.current("hotline").version != first


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
