"""Hotline IVR: a confidential, multilingual phone hotline on Twilio.

`create_app()` is the app factory gunicorn and the tests use; it reads the settings,
loads the flows and registers the blueprints, nothing else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ivr.config import Settings, load_settings

if TYPE_CHECKING:  # the pure core (flow, loader, engine) must import without Flask
    from flask import Flask

__all__ = ["create_app"]

# Seven or more digits, perhaps spaced or punctuated, not inside an id such as CA12ab…
PHONE_LIKE = re.compile(r"(?<![A-Za-z0-9])\+?\d[\d\s().-]{6,}\d(?![A-Za-z0-9])")


class RedactPhoneNumbers(logging.Filter):
    """Belt and braces: no log line leaves this process with something like a number in it.

    Our own log calls never pass a caller's number; this catches what a library might.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if PHONE_LIKE.search(message):
            record.msg, record.args = PHONE_LIKE.sub("[number]", message), None
        return True


class LibraryChatter(logging.Filter):
    """Below LOG_LEVEL=DEBUG, what libraries say under WARNING is left out: rq's lines for
    every job it takes and finishes and for its scheduler, faster-whisper's line per file.
    Our own INFO lines are one per stage of a voicemail (filed, stored, transcribed, routed,
    told) and what an admin must know; DEBUG shows everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING or record.name == "ivr"
                or record.name.startswith("ivr.") or logging.getLogger().level <= logging.DEBUG)


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactPhoneNumbers) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(LibraryChatter())
        handler.addFilter(RedactPhoneNumbers())
        root.addHandler(handler)
    root.setLevel(level)


def create_app(
    settings: Settings | None = None, clock: Callable[[], datetime] | None = None,
    *, voicemail: bool = True, enqueue: bool = True,
) -> Flask:
    """The hotline's web app. `voicemail=False`: recordings are not kept (flow scenario
    runs); `enqueue=False`: their jobs wait in the outbox for `Outbox.run_here` (`ivr call`).
    """
    from flask import Flask

    from ivr import public, voice
    from ivr.callbacks import OperatorLeg, live_numbers
    from ivr.calls import CallbackHandler, CallHandler
    from ivr.casecode import Codes
    from ivr.console import init_console
    from ivr.engine import Caller
    from ivr.jobs import Outbox, OutboxFlusher, policy_for, vault_for
    from ivr.registry import FlowRegistry
    from ivr.spool import Spool
    from ivr.storage import Database, Vault
    from ivr.voicemail import CallTally, Reported, note_calls_ended, note_consent, note_recording

    settings = settings or load_settings()
    configure_logging(settings.log_level)
    app = Flask(__name__, instance_path=str(settings.instance_dir.resolve()))
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client's address (the console's throttling), scheme and host as the proxies say;
        # Twilio's signatures are checked against PUBLIC_BASE_URL, never the request's URL.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    registry = FlowRegistry(settings.flows_dir, settings.instance_dir / "flow-versions",
                            keep=(settings.entry_flow,))
    if settings.entry_flow not in {s.id for s in registry.status()}:
        logging.getLogger(__name__).error(
            "entry flow %r is not loaded (see the flow problems above); callers will hear "
            "an apology and can leave a voicemail until it is fixed", settings.entry_flow
        )
    db = Database(settings.database_url)
    vault = vault_for(settings)
    outbox = Outbox(db, settings.redis_url, settings.redis_namespace)
    # Every webhook's own connections (recordings, consent, transfers, callbacks): a lock or
    # an outage costs a webhook WEBHOOK_DB_WAIT, never Twilio's 15 s.
    wait = settings.webhook_db_wait
    quick = (Database(settings.database_url, wait=wait),
             Vault(vault.keyring, Database(settings.keystore_url, wait=wait), settings.epoch_dir))
    spool = Spool(settings.instance_dir / "spool", vault.keyring.derived("spool"))

    def report(recording: Reported) -> None:
        """Keep a reported recording: in the database, else in the spool; raise if neither."""
        try:
            job = note_recording(*quick, recording)
        except Exception as exc:
            spool.put(recording)  # OSError: not kept at all, and the caller is told so
            logging.getLogger(__name__).warning(
                "recording %s spooled: the database did not take it in time (%s)",
                recording.recording_sid, type(exc).__name__)
            return
        if job is not None and enqueue:
            outbox.flush_soon()  # at once when Redis is up; the flusher retries when it is not

    def drain() -> int:
        return spool.drain(lambda r: note_recording(db, vault, r))

    def consent(call_sid: str, value: str) -> None:
        note_consent(quick[0], call_sid, value)

    def transfer(caller: Caller, language: str, now: datetime) -> tuple[str, ...]:
        return live_numbers(*quick, caller.region, language, now, settings.transfer_ring_max)

    def caller_id(region: str) -> str:
        return registry.regions.region(region).caller_id or settings.hotline_number

    flushing = settings.outbox_flush_seconds > 0 and voicemail and enqueue
    tally = CallTally(db) if flushing else None

    def ended(call_sid: str, region: str, seconds: int) -> None:
        when = clock() if clock else datetime.now(UTC)
        if tally is not None:
            tally.add(call_sid, region, seconds, when)  # written by the flusher thread
        else:
            note_calls_ended(quick[0], [(call_sid, region, seconds, when)])

    handler = CallHandler(settings, registry, clock, report if voicemail else None,
                          consent if voicemail else None, transfer if voicemail else None,
                          ended if voicemail else None, Codes(*quick) if voicemail else None)
    app.extensions["ivr"] = handler
    app.extensions["ivr.callbacks"] = CallbackHandler(
        settings, OperatorLeg(*quick, policy_for(settings), caller_id), handler.renderer, clock)
    app.extensions["ivr.db"] = db
    app.extensions["ivr.vault"] = vault
    app.extensions["ivr.outbox"] = outbox
    app.extensions["ivr.spool"] = spool
    app.extensions["ivr.webhook_db"] = quick[0]
    if tally is not None:
        # The spool first: its reports put jobs in the outbox that the next flush hands over.
        flusher = OutboxFlusher(outbox, settings.outbox_flush_seconds, before=(drain,),
                                also=(tally.flush,))
        app.extensions["ivr.flusher"] = flusher
        flusher.start()
    app.register_blueprint(voice.bp)
    app.register_blueprint(public.bp)
    if clock is not None:
        app.config["IVR_CLOCK"] = clock
    init_console(app, settings, db, vault, registry, policy_for(settings))
    return app
