"""Unauthenticated endpoints: health for the admin's monitor, prompt audio for Twilio's <Play>."""

from __future__ import annotations

import contextlib

import redis
from flask import Blueprint, Response, current_app, jsonify, send_from_directory
from sqlalchemy.exc import SQLAlchemyError

from ivr.calls import CallHandler
from ivr.jobs import Outbox
from ivr.spool import Spool
from ivr.storage import Database

bp = Blueprint("public", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """What is up. Always 200 while the process serves: calls work without Redis."""
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
        s.id: {"version": s.version, "file": s.file, "stale": s.stale}
        for s in h.registry.status()
    }
    waiting = None
    if db_error is None:
        outbox: Outbox = current_app.extensions["ivr.outbox"]
        with contextlib.suppress(SQLAlchemyError):  # tables not made yet: `ivr db upgrade`
            waiting = outbox.pending()
    spool: Spool = current_app.extensions["ivr.spool"]
    problems = [str(p) for p in h.registry.problems if not p.warning]
    entry_ok = h.settings.entry_flow in flows
    body = {
        "status": "ok" if db_error is None and keys_error is None and entry_ok and not problems
        else "degraded",
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
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/audio/<path:name>")
def audio(name: str) -> Response:
    """Recorded prompts under flows/audio (public content: the menu everyone hears)."""
    h: CallHandler = current_app.extensions["ivr"]
    return send_from_directory((h.settings.flows_dir / "audio").resolve(), name, max_age=3600)
