"""Unauthenticated endpoints: health for the admin's monitor, prompt audio for Twilio's <Play>."""

from __future__ import annotations

import contextlib
import hmac
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import metadata

import redis
from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory, session
from sqlalchemy.exc import SQLAlchemyError

from ivr.calls import CallHandler
from ivr.jobs import Outbox
from ivr.spool import Spool
from ivr.storage import Database

bp = Blueprint("public", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """What is up. Always 200 while the process serves: calls work without Redis.

    Anyone may ask (a monitor, a load balancer), so the open answer says only `status` (up or
    degraded) and the versions; what is wrong, file paths and how many voicemails wait are
    for `Authorization: Bearer HEALTHZ_TOKEN` or a signed-in admin's console session.
    """
    h: CallHandler = current_app.extensions["ivr"]
    db: Database = current_app.extensions["ivr.db"]
    db_error = db.ping()
    keystore: Database = current_app.extensions["ivr.vault"].keys
    keys_error = keystore.ping()
    try:
        client = redis.Redis.from_url(
            h.settings.redis_url, socket_connect_timeout=0.3, socket_timeout=0.3
        )
        redis_ok = bool(client.ping())
        client.close()
    except redis.RedisError:
        redis_ok = False
    flows = {
        s.id: {"version": s.version, "file": s.file, "stale": s.stale, "archived": s.archived}
        for s in h.registry.status()
    }
    problems = [str(p) for p in h.registry.problems if not p.warning]
    entry_ok = h.settings.entry_flow in flows
    healthy = db_error is None and keys_error is None and entry_ok and not problems
    if not _may_see_details(h.settings.healthz_token):
        return _no_store(jsonify({
            "status": "up" if healthy else "degraded",
            "versions": {"ivr": _version(), "flows": {i: f["version"] for i, f in flows.items()}},
        }))
    waiting = None
    if db_error is None:
        outbox: Outbox = current_app.extensions["ivr.outbox"]
        with contextlib.suppress(SQLAlchemyError):  # tables not made yet: `ivr db upgrade`
            waiting = outbox.pending()
    spool: Spool = current_app.extensions["ivr.spool"]
    body = {
        "status": "ok" if healthy else "degraded",
        "versions": {"ivr": _version(), "flows": {i: f["version"] for i, f in flows.items()}},
        "database": {"ok": db_error is None, "backend": db.backend,
                     **({"error": db_error} if db_error else {})},
        "keystore": {"ok": keys_error is None, "backend": keystore.backend,
                     **({"error": keys_error} if keys_error else {})},
        "redis": {"ok": redis_ok},
        # voicemails noted but not yet handed to Redis (they wait safely in the database)
        "outbox": {"waiting": waiting},
        # recording reports the database could not take in time, kept sealed on this machine's
        # disk until it can (ivr/spool.py); more than 0 for long means the database is away
        "spool": {"waiting": spool.count()},
        "flows": flows,
        "entry_flow": {"id": h.settings.entry_flow, "ok": entry_ok},
        "flow_problems": problems[:20],
    }
    return _no_store(jsonify(body))


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@cache
def _version() -> str:
    try:
        return metadata.version("hotline-ivr")
    except metadata.PackageNotFoundError:
        return "unknown"


def _may_see_details(token: str) -> bool:
    """`Authorization: Bearer <HEALTHZ_TOKEN>` (compared in constant time), or the console
    session of a signed-in admin (the same checks as the console: a live session on the
    server, not idle, the operator active and enrolled)."""
    given = request.headers.get("Authorization", "")
    if token and given.startswith("Bearer ") and hmac.compare_digest(
            given[len("Bearer "):].strip().encode(), token.encode()):
        return True
    console = current_app.extensions.get("ivr.console")
    token_of_session = session.get("sid")
    if console is None or not isinstance(token_of_session, str):
        return False
    clock = current_app.config.get("IVR_CLOCK")
    now = clock() if clock else datetime.now(UTC)
    from ivr.console.auth import load_user

    # The console's own check: the session's row on the server, live, not idle, its operator
    # active and enrolled.
    found = load_user(console.db, token_of_session, now,
                      timedelta(minutes=console.settings.console_idle_minutes))
    return found is not None and found.admin


@bp.get("/audio/<path:name>")
def audio(name: str) -> Response:
    """Recorded prompts under flows/audio (public content: the menu everyone hears)."""
    h: CallHandler = current_app.extensions["ivr"]
    return send_from_directory((h.settings.flows_dir / "audio").resolve(), name, max_age=3600)
