"""The `ivr` command: run the hotline, call it from a terminal, check and test flows.

Errors a user made (a bad setting, a broken flow, a failed scenario) end in one clear
message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
from dotenv import load_dotenv

from ivr.casebook import STATUSES
from ivr.config import EXIT_CONFIG, Settings, explain, load_settings
from ivr.errors import ConfigError

if TYPE_CHECKING:
    from ivr.routing import Regions
    from ivr.standin import Phone, RecordingStore, RemoteApi
    from ivr.storage import Database, Vault

DEFAULT_CALLER = "+79161234567"  # a Moscow mobile number, for trying the hotline out


class SettingsError(click.ClickException):
    """Wrong settings: `explain`'s lines as they are (no "Error:"), exit EXIT_CONFIG."""

    exit_code = EXIT_CONFIG

    def show(self, file: object = None) -> None:
        click.echo(self.message, err=True)


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise SettingsError(explain(exc)) from None


@click.group()
def main() -> None:
    """Hotline IVR: run it, call it, check and test its flows."""
    load_dotenv(os.environ.get("IVR_DOTENV", ".env"), override=False)


# --- running ------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 to let other machines call in).")
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "5000")), show_default="5000")
@click.option("--workers", type=int, default=lambda: int(os.environ.get("WEB_CONCURRENCY", "2")),
              show_default="2")
def serve(host: str, port: int, workers: int) -> None:
    """Answer calls: gunicorn with the app factory, as the Procfile's `web` runs it.

    In development (IVR_ENV unset) it runs the whole hotline on this machine: the web
    process, a worker when Redis answers, and, unless TWILIO_API_BASE is set, a local
    stand-in of Twilio's REST API on PORT+1 that keeps what `ivr call --url` callers record.
    """
    s = settings()
    s.instance_dir.mkdir(parents=True, exist_ok=True)
    from ivr.jobs import prepare_stores
    from ivr.loader import flow_files, load_set

    prepare_stores(s)  # in development it also makes the data key once, before processes race

    result = load_set(flow_files([s.flows_dir]))
    for problem in result.problems:
        click.echo(str(problem), err=True)
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).parent / "gunicorn")
    argv = [gunicorn, "--config", "python:ivr.serving", "--bind", f"{host}:{port}",
            "--workers", str(workers), "ivr:create_app()"]
    if not s.production:  # gunicorn's start-up and worker lines: LOG_LEVEL=DEBUG shows them
        argv[1:1] = ["--log-level", "info" if s.log_level == "DEBUG" else "warning"]
    click.echo(f"Hotline answering on http://127.0.0.1:{port}  (flows: {', '.join(result.flows)})")
    if s.env == "production":
        os.execv(gunicorn, argv)
    _serve_development(s, port, argv)


def _serve_development(s: Settings, port: int, argv: list[str]) -> None:
    import signal
    import subprocess

    import redis

    from ivr.standin import Created, HttpTransport, Phone, ScriptedCaller, TwilioApi

    def operator_answers(call: Created) -> None:
        """A callback rings the operator's phone: here it answers, presses 1, and the caller
        answers too and presses 1, so `ivr cases callback ID` can be tried with no phone."""
        phone = Phone(HttpTransport(s.public_base_url, f"http://127.0.0.1:{port}"), s.public_base_url,
                      s.twilio_auth_token, s.twilio_account_sid, s.hotline_number)
        log = phone.answer(call, ScriptedCaller(["1", "answer"]), callee=ScriptedCaller(["1"]))
        errors = log.errors + phone.callee_log.errors
        click.echo("Twilio stand-in, the operator's phone: " + " / ".join(h.text for h in log.heard)
                   + "; the caller's phone: " + " / ".join(h.text for h in phone.callee_log.heard)
                   + (f" (errors: {'; '.join(errors)})" if errors else ""))

    env = dict(os.environ)
    api = None
    if not os.environ.get("TWILIO_API_BASE"):
        api = TwilioApi(s.twilio_account_sid, s.twilio_auth_token, port=port + 1,
                        on_call=operator_answers)
        try:
            env["TWILIO_API_BASE"] = api.start()
        except OSError:
            raise click.ClickException(f"port {port + 1} is taken (the Twilio stand-in goes there): "
                                       "choose another --port, or set TWILIO_API_BASE") from None
        click.echo(f"Twilio's REST side (a local stand-in) on {env['TWILIO_API_BASE']}")
        # So that `ivr cases callback` from another terminal reaches this stand-in too.
        s.instance_dir.mkdir(parents=True, exist_ok=True)
        (s.instance_dir / STANDIN_FILE).write_text(env["TWILIO_API_BASE"] + "\n", encoding="utf-8")
    children = [subprocess.Popen(argv, env=env)]
    try:
        redis.Redis.from_url(s.redis_url, socket_connect_timeout=1).ping()
        children.append(subprocess.Popen([sys.executable, "-m", "ivr.cli", "worker"], env=env))
        click.echo("Worker running: voicemails become cases (ivr cases list)")
    except redis.RedisError:
        click.echo("No Redis at REDIS_URL: voicemails wait in the database until `ivr worker` runs "
                   "with Redis up", err=True)
    click.echo(f"Call it from another terminal:  .venv/bin/ivr call --url http://127.0.0.1:{port}")

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        code = next(child.returncode for child in children if child.returncode is not None)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if api is not None:
            api.stop()
            (s.instance_dir / STANDIN_FILE).unlink(missing_ok=True)
    sys.exit(code)


STANDIN_FILE = "twilio-standin.url"


def _rest_settings(s: Settings) -> Settings:
    """In development with no TWILIO_API_BASE, the stand-in a running `ivr serve` started."""
    marker = s.instance_dir / STANDIN_FILE
    if s.production or os.environ.get("TWILIO_API_BASE") or not marker.is_file():
        return s
    return s.replace(twilio_api_base=marker.read_text(encoding="utf-8").strip())


@main.command()
@click.option("--burst", is_flag=True, help="Work the queue until it is empty, then stop.")
def worker(burst: bool) -> None:
    """Run a background worker (rq): voicemails to cases, retention, re-runs.

    It waits for Redis when Redis is down and goes on when it is back; stop it with SIGTERM.
    """
    import redis
    from rq import Queue, SimpleWorker

    from ivr import configure_logging, jobs

    s = settings()
    configure_logging(s.log_level)  # the same format and phone-number filter as the web
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # speech models never come from a hub
    services = jobs.services()
    if burst:  # work what is queued now, then stop (tests, one-off runs)
        _prepare_models(s)
        conn = redis.Redis.from_url(s.redis_url)
        try:
            conn.ping()
        except redis.RedisError as exc:
            raise click.ClickException(f"cannot reach Redis at REDIS_URL: {exc}") from None
        jobs.drain_spool()
        jobs.Outbox(services.db, s.redis_url, s.redis_namespace).flush()
        SimpleWorker([Queue(s.redis_namespace, connection=conn)], connection=conn).work(burst=True)
        return
    jobs.Housekeeper(services.db, s.redis_url, policy=services.policy,
                     namespace=s.redis_namespace, drain=jobs.drain_spool,
                     reconcile=jobs.reconcile_recordings,
                     reconcile_every=s.reconcile_minutes * 60).start()
    # The models are joined and loaded beside the main loop, a moment after it starts (their
    # imports take a second of CPU), so the worker reaches Redis (or says it waits for it) at
    # once; a voicemail that comes first waits for its model, not for the others.
    def prepare_soon() -> None:
        time.sleep(PREPARE_AFTER)
        _prepare_models(s)

    threading.Thread(target=prepare_soon, name="prepare-models", daemon=True).start()
    jobs.work(s.redis_url, s.redis_namespace)


PREPARE_AFTER = 3.0  # seconds after a worker starts, its speech models are prepared


def _prepare_models(s: Settings) -> bool:
    """Join, check and load every speech engine of TRANSCRIBE_ENGINES, saying so line by line.
    True when all are ready; a language that is not ready gets "no model for …" on its cases."""
    from ivr import transcribe as asr

    def say(line: str) -> None:
        click.echo(f"speech models: {line}", err=True)

    engines = asr.parse_engines(s.transcribe_engines)
    if not engines:
        say("none configured (TRANSCRIBE_ENGINES=none): voicemails are filed untranscribed")
        return True
    say(f"preparing {', '.join(f'{lang}={spec}' for lang, spec in engines.items())}")
    states = asr.prepare(engines, s.transcribe_threads, s.model_cache, say)
    for language, state in states.items():
        say(f"{language}: {state}")
    return all(state.startswith("ready") for state in states.values())


@main.group()
def models() -> None:
    """The offline speech models (TRANSCRIBE_ENGINES)."""


@models.command("prepare")
def models_prepare() -> None:
    """Join and check the bundled Whisper base model and load every engine, ahead of a deploy
    (`ivr worker` does it too at start). Exit 1 if a language has no usable model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = settings()
    if not _prepare_models(s):
        sys.exit(1)


@main.command("transcribe")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--language", type=click.Choice(["ru", "uk", "en"]), default=None,
              help="The language the caller chose in the menu (default: the entry flow's default).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list, one object per file.")
def transcribe_files(files: tuple[Path, ...], language: str | None, as_json: bool) -> None:
    """Transcribe WAV files exactly as the worker would (engines of TRANSCRIBE_ENGINES, language
    identification among the entry flow's languages, the guard), to try a model before deploying it.

    The words are printed here and nowhere else: nothing is logged or stored.
    """
    from ivr import jobs, voicemail

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    s = settings()
    flow, chosen = s.entry_flow, language or _default_language(s)
    tool = jobs.transcriber_tool(s)
    rows: list[dict[str, object]] = []
    failed = False
    for path in files:
        row: dict[str, object] = {"file": str(path), "chosen_language": chosen}
        try:
            heard = tool(chosen, path.read_bytes(), flow)
        except (OSError, voicemail.NoModel, ValueError) as exc:
            row["error"] = str(exc) if not isinstance(exc, OSError) else f"cannot read it: {exc.strerror}"
            failed = True
        else:
            confidence = heard.confidence
            row.update(text=heard.text, language=heard.language, engine=heard.engine,
                       confidence=round(confidence, 3) if confidence is not None else None,
                       seconds=round(heard.audio_seconds, 2), rtf=round(heard.rtf, 3),
                       flags=list(heard.flags),
                       detected=({"language": heard.detected[0], "probability": round(heard.detected[1], 3)}
                                 if heard.detected else None))
        rows.append(row)
        if not as_json:
            _print_transcript(row)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    if failed:
        sys.exit(1)


def _default_language(s: Settings) -> str:
    from ivr.loader import flow_files, load_set

    flows = load_set(flow_files([s.flows_dir])).flows
    entry = flows.get(s.entry_flow)
    return entry.default_language if entry is not None else "en"


def _print_transcript(row: dict[str, object]) -> None:
    if "error" in row:
        click.echo(f"{row['file']}: not transcribed: {row['error']}")
        return
    spoken = str(row["language"])
    if row["language"] != row["chosen_language"]:
        spoken += f" (chose {row['chosen_language']})"
    confidence = f"{row['confidence']:.2f}" if row["confidence"] is not None else "-"
    flags = row["flags"]
    click.echo(f"{row['file']}: {row['seconds']} s, {spoken}, {row['engine']}, confidence {confidence}, "
               f"RTF {row['rtf']}" + (f", {', '.join(flags)}" if isinstance(flags, list) and flags else ""))
    click.echo(f"  {row['text']}" if row["text"] else "  (no words)")


# --- data ---------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the newest schema (run before starting; safe to repeat)."""
    from ivr.jobs import prepare_stores

    s = settings()
    prepare_stores(s)
    click.echo("database is up to date")


@main.group()
def keys() -> None:
    """Master keys that protect callers' data (IVR_DATA_KEYS)."""


@keys.command("new")
def keys_new() -> None:
    """Print a new master key: put it first in IVR_DATA_KEYS, then `ivr keys rotate`."""
    from ivr.keys import new_master_key

    click.echo(new_master_key())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every data key with the first master key, so older ones can be dropped."""
    _db, vault = _stores()
    count = vault.rotate()
    click.echo(f"re-wrapped {count} data key(s) under a new key epoch sealed with "
               f"{vault.keyring.current}; keys other than {vault.keyring.current} can now be "
               "removed from IVR_DATA_KEYS")


@main.command()
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
def backup(target: Path) -> None:
    """Copy the data, the key store and the key epochs, consistently, into a new folder in TARGET.

    The key store's copy opens every case alive now, even once it is purged here: keep it
    no longer than RETENTION_DAYS (see the README)."""
    from ivr.backup import BackupError
    from ivr.backup import backup as make_backup
    from ivr.jobs import prepare_stores

    s = settings()
    prepare_stores(s)
    try:
        folder = make_backup(s.database_url, s.keystore_url, s.epoch_dir, target)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backed up to {folder}; delete its keys.* and key-epochs within "
               f"{s.retention_days} days, or purged callers can be read from it")


@main.command()
@click.option("--older-than", "older_than", default="30d", show_default=True,
              help="Closed longer ago than this: 30d, 12h, 90m.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(older_than: str, yes: bool) -> None:
    """Destroy the number, audio and transcript of cases closed before then (keys first)."""
    from ivr.voicemail import purge as purge_cases

    age = _duration(older_than)
    if not yes:
        click.confirm(f"Destroy the data of cases closed more than {older_than} ago?", abort=True)
    from ivr.jobs import call_deleter

    count = purge_cases(*_stores(), age, call_deleter(settings()), call_deleter(settings(), "recording"))
    click.echo(f"destroyed the data of {count} case(s); their anonymous counts remain")


def _duration(text: str) -> timedelta:
    units = {"d": "days", "h": "hours", "m": "minutes"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise click.ClickException(f"{text!r} is not a duration like 30d, 12h or 90m")
    return timedelta(**{units[unit]: int(number)})


@main.group()
def cases() -> None:
    """Voicemail cases."""


def _stores() -> tuple[Database, Vault]:
    """The database and the vault (its key store), migrated to the newest schema."""
    from ivr.jobs import prepare_stores, vault_for
    from ivr.storage import Database

    s = settings()
    prepare_stores(s)
    return Database(s.database_url), vault_for(s)


def _actor() -> str:
    """Who the audit log says did it: the operating-system account this process runs as.

    Not $USER, which anyone can set to anyone (`USER=olena ivr cases show 12`)."""
    return f"cli:{os_account()}"


def os_account() -> str:
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (some containers): the number itself
        return f"uid-{uid}"


@cases.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--region", default=None, help="A region name from flows/regions.yaml.")
@click.option("--untranscribed", is_flag=True, help="Only cases whose words could not be had.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cases_list(status: str | None, region: str | None, untranscribed: bool, as_json: bool) -> None:
    """The cases, newest first (no caller data: `ivr cases show ID` for the transcript)."""
    from ivr.casebook import list_cases

    db, vault = _stores()
    rows = list_cases(db, status=status, region=region,
                      transcription="failed" if untranscribed else None, vault=vault)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        click.echo(f"#{r['id']:<6} {r['status']:<22} {r['region'] or '-':<10} "
                   f"{r['language'] or '-':<3} {r['created_at']}"
                   + (f"  ({r['status_reason']})" if r["status_reason"] else "")
                   + (f"  [{r['flag']}]" if r["flag"] != "none" else ""))
    click.echo(f"{len(rows)} case(s)")


@cases.command("show")
@click.argument("case_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cases_show(case_id: int, as_json: bool) -> None:
    """One case with its transcript (decrypted here; the reading is written to the audit log)."""
    from ivr.casebook import show_case

    db, vault = _stores()
    found = show_case(db, vault, case_id, actor=_actor())
    if found is None:
        raise click.ClickException(f"no case #{case_id} (see `ivr cases list`)")
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    timeline = found.pop("timeline")
    found.pop("transcript_words", None)  # each word's confidence: in --json and the console
    replies = found.pop("replies")
    for key, value in found.items():
        click.echo(f"{key:>30}: {value if value is not None else '-'}")
    click.echo(f"{'replies':>30}:" + ("" if replies else " -"))
    for r in replies:
        heard = (f"heard {r['heard_at']}" + (f" ({r['heard_count']} times)" if r["heard_count"] > 1 else "")
                 if r["heard_at"] else "not heard yet")
        click.echo(f"{'':>32}#{r['id']} {r['at']} {r['author']}: {heard}")
        for line in (r["text"] or "(destroyed)").split("\n"):
            click.echo(f"{'':>34}{line}")
    click.echo(f"{'timeline':>30}:")
    for entry in timeline:
        click.echo(f"{'':>32}{entry['at']} {entry['actor']}: {entry['action']}"
                   + (f" ({entry['detail']})" if entry["detail"] else ""))


@cases.command("reply")
@click.argument("case_id", type=int)
@click.option("--text", required=True,
              help="What the caller hears, in their language (plain words; at most 1,000 characters).")
def cases_reply(case_id: int, text: str) -> None:
    """Leave a reply for the caller: read to them by a synthetic voice when they call with
    their case's code. Sealed like a note; a closed case takes one until its data is destroyed."""
    from ivr.replies import ReplyError, add_reply

    db, vault = _stores()
    try:
        reply_id = add_reply(db, vault, case_id, text, actor=_actor())
    except ReplyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"reply #{reply_id} saved on case #{case_id}: the caller hears it when they call "
               "with their code (`ivr cases show` says when it was heard)")


@cases.command("close")
@click.argument("case_id", type=int)
@click.option("--reason", prompt="Why is it closed (no caller data, please)",
              help="Why (kept on the case; no caller data, please). Asked when not given.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cases_close(case_id: int, reason: str, yes: bool) -> None:
    """Close a case; its data is destroyed RETENTION_DAYS later (`ivr cases reopen` until then)."""
    from ivr.casebook import CaseError, close_case

    reason = " ".join(reason.split())[:200]
    if not reason:
        raise click.ClickException("say why the case is closed (--reason)")
    days = settings().retention_days
    if not yes:
        click.confirm(f"Close case #{case_id}? {days} days after closing, its recording, transcript, "
                      "notes and the caller's number are destroyed for good (until then "
                      f"`ivr cases reopen {case_id}` opens it again).", abort=True)
    db, _vault = _stores()
    try:
        close_case(db, case_id, _actor(), reason)
    except CaseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"case #{case_id} closed; its data will be destroyed in {days} days")


@cases.command("reopen")
@click.argument("case_id", type=int)
@click.option("--reason", prompt="Why is it reopened", help="Why (kept in the audit log).")
def cases_reopen(case_id: int, reason: str) -> None:
    """Open a closed case again, until its data is destroyed: the retention clock stops, and it
    goes back to its operator (if still active) or by the rule, who is told by SMS."""
    from ivr.casebook import CaseError, reopen_case

    reason = " ".join(reason.split())[:200]
    if not reason:
        raise click.ClickException("say why the case is reopened (--reason)")
    db, vault = _stores()
    try:
        given = reopen_case(db, vault, case_id, _actor(), reason)
    except CaseError as exc:
        raise click.ClickException(str(exc)) from None
    _tell_new_operator(db, case_id, given, f"case #{case_id} reopened: ")


def _tell_new_operator(db: Database, case_id: int, given: int | None, said: str) -> None:
    """A case given (back) to someone: the worker tells them by SMS; say who has it now."""
    from ivr.callbacks import NOTIFY
    from ivr.storage import OutboxJob

    with db.session() as s:
        s.add(OutboxJob(job=NOTIFY, target_id=case_id))
    click.echo(said + (f"operator {given}" if given else "unassigned, escalated to supervisors"))


@cases.command("flag")
@click.argument("case_id", type=int)
@click.option("--reason", prompt="Why does the call look like a probe",
              help="Why (sealed on the case like a note: only supervisors read it). Asked when not given.")
def cases_flag(case_id: int, reason: str) -> None:
    """Mark a case a possible intelligence probe: it goes to supervisors only, and its
    callbacks and SMS stop until `ivr cases unflag` or `ivr cases confirm-probe`."""
    from ivr.casebook import CaseError
    from ivr.probes import flag_case

    db, vault = _stores()
    try:
        flag_case(db, vault, case_id, _actor(), reason)
    except CaseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"case #{case_id} marked as a possible probe: supervisors only, no callbacks or SMS")


@cases.command("unflag")
@click.argument("case_id", type=int)
def cases_unflag(case_id: int) -> None:
    """Not a probe: back to normal, to its operator (if still active) or by the rule, who is
    told by SMS."""
    from ivr.casebook import CaseError
    from ivr.probes import clear_flag

    db, _vault = _stores()
    try:
        given = clear_flag(db, case_id, _actor())
    except CaseError as exc:
        raise click.ClickException(str(exc)) from None
    _tell_new_operator(db, case_id, given, f"case #{case_id}: flag cleared; ")


@cases.command("confirm-probe")
@click.argument("case_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cases_confirm_probe(case_id: int, yes: bool) -> None:
    """Confirm a flagged case is a probe: it is closed for good (never reopened, its code
    stops working); its data is destroyed RETENTION_DAYS later, as for any closed case."""
    from ivr.casebook import CaseError
    from ivr.probes import confirm_probe

    days = settings().retention_days
    if not yes:
        click.confirm(f"Close case #{case_id} as a probe? It cannot be reopened; {days} days "
                      "after closing its data is destroyed for good.", abort=True)
    db, _vault = _stores()
    try:
        confirm_probe(db, case_id, _actor())
    except CaseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"case #{case_id} confirmed as a probe and closed; its data will be destroyed in {days} days")


# --- calling ------------------------------------------------------------------------------


@main.command()
@click.option("--from", "from_", default=DEFAULT_CALLER, show_default=True,
              help="The caller's number, or `anonymous` for a withheld one.")
@click.option("--press", default=None,
              help="Answers in order, comma-separated: keys (1, 2, #), `wait` for silence, "
                   "`say:words` to speak, `answer`/`busy` at a transfer. Without it: ask.")
@click.option("--voicemail", default=None, metavar="FILE.wav|say:TEXT",
              help="What you say at the tone: a WAV file, or say:TEXT spoken by espeak-ng "
                   "(default: silence, which makes no case).")
@click.option("--url", default=None, help="A running hotline (else the app runs in-process).")
@click.option("--at", "at", default=None, help="In-process only: the time of the call (ISO 8601).")
@click.option("--steps", is_flag=True, help="Show the flow steps each answer walked.")
def call(from_: str, press: str | None, voicemail: str | None, url: str | None, at: str | None,
         steps: bool) -> None:
    """Call the hotline from the terminal, hearing what a caller hears.

    In-process (no --url), a message left at the tone goes where Twilio would keep it (a
    local stand-in of Twilio's REST API) and is processed right here as a worker would:
    fetched, sealed, deleted there, transcribed, filed as a case.
    """
    from ivr.standin import Caller, ScriptedCaller, TwilioApi

    s = settings()
    if url and at:
        raise click.ClickException("--at works in-process only (leave out --url)")
    remote = _remote_api(s, url) if url else None
    if url and voicemail and remote is None:
        raise click.ClickException("--voicemail needs the Twilio stand-in that `ivr serve` runs on "
                                   "PORT+1 in development; it does not answer")
    from ivr.standin import silence_wav

    audio = _voicemail_audio(voicemail) if voicemail else silence_wav()
    caller: Caller
    if press is not None:
        caller = ScriptedCaller([p.strip() for p in press.split(",") if p.strip()], _print_heard,
                                recording=audio)
    else:
        caller = InteractiveCaller(audio)
    api = None if url else TwilioApi(s.twilio_account_sid, s.twilio_auth_token)
    try:
        if api is not None:
            from ivr.jobs import prepare_stores

            prepare_stores(s)
            s = s.replace(twilio_api_base=api.start())
        phone = _phone(s, url, at, _print_steps if steps else None, api or remote)
        click.echo(f"Calling {s.hotline_number} from {from_} …")
        log = phone.call(from_, caller)
        ended = {"hangup": "the hotline hung up", "end-of-document": "the hotline hung up",
                 "caller-hangup": "you hung up", "reject": "the hotline rejected the call"}
        click.echo(f"Call ended: {ended.get(log.ended, log.ended)} after {log.requests} webhooks.")
        if api is not None:
            _file_voicemails(s, phone)
    finally:
        if api is not None:
            api.stop()
    for error in log.errors:
        click.echo(f"error: {error}", err=True)
    if log.errors:
        sys.exit(1)


def _remote_api(s: Settings, url: str) -> RemoteApi | None:
    """The stand-in of Twilio's REST side beside a development `ivr serve` (on PORT+1)."""
    from urllib.parse import urlsplit

    from ivr.standin import RemoteApi

    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        return None
    api = RemoteApi(f"http://127.0.0.1:{parts.port + 1}", s.twilio_account_sid, s.twilio_auth_token)
    return api if api.reachable() else None


UKRAINIAN_DEMO = Path("examples/speech/uk-d1.wav")


def _voicemail_audio(spec: str) -> bytes:
    """A WAV file, or say:TEXT spoken: Russian by festival (festvox-ru) when installed, which
    Whisper understands, else by espeak-ng, whose Russian and Ukrainian it does not."""
    from ivr.standin import synthesize
    from ivr.standin.phone import festival_russian

    if spec.startswith("say:"):
        text = spec[4:]
        lower = text.lower()
        if any(c in lower for c in "іїєґ"):
            click.echo("note: no offline voice speaks Ukrainian so that Whisper understands it "
                       "(espeak-ng's it does not): for a Ukrainian transcript give a recording, e.g. "
                       f"--voicemail {UKRAINIAN_DEMO} (synthetic speech, see examples/speech/README.md)",
                       err=True)
        elif any("а" <= c <= "я" or c == "ё" for c in lower):
            try:
                spoken = festival_russian(text)
            except (OSError, subprocess.SubprocessError) as exc:
                raise click.ClickException(f"--voicemail say:…: festival failed ({exc})") from None
            if spoken is not None:
                return spoken
            click.echo("note: festival and festvox-ru are not installed (apt-get install festival "
                       "festvox-ru): espeak-ng speaks instead, and Whisper cannot understand its Russian",
                       err=True)
        try:
            return synthesize(text)
        except RuntimeError as exc:
            raise click.ClickException(f"--voicemail say:…: {exc}") from None
    path = Path(spec)
    if not path.is_file():
        raise click.ClickException(f"--voicemail {spec}: no such file (give a WAV file or say:TEXT)")
    return path.read_bytes()


def _file_voicemails(s: Settings, phone: Phone) -> None:
    """Run the voicemail jobs this call left, here, as `ivr worker` would; show the cases."""
    from sqlalchemy import select

    from ivr import jobs
    from ivr.casebook import list_cases
    from ivr.storage import Case

    app = phone.transport.app  # type: ignore[attr-defined]  # in-process: a FlaskTransport
    outbox: jobs.Outbox = app.extensions["ivr.outbox"]
    db = app.extensions["ivr.db"]
    with db.session() as session:  # the cases this call made, before the worker listens
        waiting = set(session.scalars(select(Case.id).where(Case.status == "new")))
    jobs.use(lambda _settings: jobs.build_services(s))
    try:
        ran = outbox.run_here()
    except Exception as exc:  # the case is kept; a worker will take it up again
        raise click.ClickException(f"the voicemail is kept but could not be processed here: {exc}") \
            from None
    with db.session() as session:
        kept = set(session.scalars(select(Case.id).where(Case.id.in_(waiting))))
    if ran and not kept:
        click.echo("Nothing was said at the tone: no case filed, the recording deleted at Twilio.")
    if kept:
        for row in list_cases(db, limit=len(kept)):
            reason = f" ({row['status_reason']})" if row["status_reason"] else ""
            whom = (f"operator #{row['operator_id']}" if row["operator_id"] else
                    "unassigned, escalated to supervisors")
            click.echo(f"Voicemail filed as case #{row['id']}: transcription {row['transcription']}"
                       f"{reason}, region {row['region']}, language {row['language']}, {whom}, "
                       f"callback: {row['consent']}. Read it: ivr cases show {row['id']}")


def _print_heard(kind: str, text: str, locale: str) -> None:
    click.echo({"say": f"  [{locale}] {text}", "play": f"  ♪ {text}", "pause": "  …"}[kind])


def _print_steps(names: list[str]) -> None:
    click.echo(f"    ({' → '.join(names)})")


class InteractiveCaller:
    """A person at the terminal: keys are typed, each wait is a prompt."""

    def __init__(self, recording: bytes | None = None) -> None:
        self.recording = recording

    def audio(self, info: dict[str, str]) -> bytes | None:
        return self.recording

    def hear(self, kind: str, text: str, locale: str) -> None:
        _print_heard(kind, text, locale)

    def keys(self, info: dict[str, str]) -> str:
        speech = " or speak (say:words)" if "speech" in info.get("input", "") else ""
        answer = click.prompt(
            f"  press keys{speech}; Enter = silence, h = hang up",
            default="", show_default=False,
        ).strip()
        return {"": "wait", "h": "hangup"}.get(answer, answer)

    def record(self, info: dict[str, str]) -> str:
        answer = click.prompt(
            f"  (recording, up to {info.get('maxLength', '?')} s) press {info.get('finishOnKey', '#')}"
            " to end your message, Enter = say nothing, h = hang up",
            default="", show_default=False,
        ).strip()
        return {"": "wait", "h": "hangup"}.get(answer, answer)

    def dial(self, numbers: list[str]) -> str:
        answer = click.prompt(
            f"  (ringing {len(numbers)} operator phone(s)) a = answered, b = busy, Enter = no answer",
            default="", show_default=False,
        ).strip()
        return {"a": "completed", "b": "busy"}.get(answer, "no-answer")


def _phone(
    s: Settings, url: str | None, at: str | None, on_step: Callable[[list[str]], None] | None,
    api: RecordingStore | None = None,
) -> Phone:
    from ivr import create_app
    from ivr.standin import FlaskTransport, HttpTransport, Phone, Transport

    transport: Transport
    if url:
        transport = HttpTransport(s.public_base_url, url)
    else:
        clock = None
        if at:
            when = _parse_time(at)
            clock = lambda: when  # noqa: E731
        transport = FlaskTransport(create_app(s.replace(log_level="WARNING"), clock=clock, enqueue=False))
    return Phone(transport, s.public_base_url, s.twilio_auth_token, s.twilio_account_sid,
                 s.hotline_number, on_step, api=api)


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.ClickException(f"--at {text!r} is not a time like 2026-11-25T22:30+02:00") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- operators ----------------------------------------------------------------------------


@main.group()
def operators() -> None:
    """The people who call callers back (their numbers are kept encrypted)."""


def _operator_call(fn: Callable[[], object]) -> object:
    from ivr.operators import OperatorError

    try:
        return fn()
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None


@operators.command("add")
@click.option("--name", required=True)
@click.option("--number", required=True, help="E.164, like +380441234567 (stored encrypted).")
@click.option("--languages", required=True, help="Comma-separated: ru,uk")
@click.option("--regions", "region_names", required=True, help="Comma-separated: crimea,occupied")
@click.option("--timezone", default="Europe/Kyiv", show_default=True)
@click.option("--hours", default="always", show_default=True,
              help="Working hours, like `mon-fri 09:00-18:00; sat 10:00-14:00`.")
@click.option("--capacity", type=int, default=5, show_default=True, help="Open cases at most.")
@click.option("--supervisor", is_flag=True,
              help="Also told (by SMS) of every case no operator could take; sees every region.")
def operators_add(name: str, number: str, languages: str, region_names: str, timezone: str, hours: str,
                  capacity: int, supervisor: bool) -> None:
    """Add an operator (on duty from now on)."""
    from ivr.operators import add_operator

    db, vault = _stores()
    new_id = _operator_call(lambda: add_operator(
        db, vault, name=name, number=number, languages=languages, regions=region_names,
        timezone=timezone, hours=hours, capacity=capacity,
        role="supervisor" if supervisor else "operator", actor=_actor()))
    click.echo(f"operator #{new_id} {name} added")


@operators.command("list")
@click.option("--numbers", is_flag=True, help="Also show their phone numbers (decrypted).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def operators_list(numbers: bool, as_json: bool) -> None:
    """Every operator, with open cases against capacity."""
    from ivr.operators import list_operators

    db, vault = _stores()
    rows = list_operators(db, vault, numbers, actor=_actor())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        state = "disabled" if not r["active"] else ("on duty" if r["on_duty"] else "off duty")
        click.echo(f"#{r['id']:<4} {r['name']:<20} {','.join(r['languages']):<8} "  # type: ignore[arg-type]
                   f"{','.join(r['regions']):<24} {r['open_cases']}/{r['capacity']} open  "  # type: ignore[arg-type]
                   f"{state:<9} {r['hours']} ({r['timezone']})"
                   + ("  supervisor" if r["role"] == "supervisor" else "")
                   + (f"  {r['number']}" if numbers else ""))
    click.echo(f"{len(rows)} operator(s)")
    from ivr.operators import uncovered
    from ivr.routing import load_regions

    found, _problems = load_regions(settings().flows_dir / "regions.yaml")
    for warning in uncovered(db, {r.name: r.language for r in found.regions}):
        click.echo(f"warning: {warning}: its cases go unassigned and are escalated", err=True)


@operators.command("edit")
@click.argument("operator_id", type=int)
@click.option("--name")
@click.option("--number")
@click.option("--languages")
@click.option("--regions", "region_names")
@click.option("--timezone")
@click.option("--hours")
@click.option("--capacity", type=int)
@click.option("--on-duty/--off-duty", "on_duty", default=None)
@click.option("--role", type=click.Choice(["operator", "supervisor", "admin"]), default=None,
              help="admin: a supervisor who also sees the flows in the console.")
def operators_edit(operator_id: int, name: str | None, number: str | None, languages: str | None,
                   region_names: str | None, timezone: str | None, hours: str | None,
                   capacity: int | None, on_duty: bool | None, role: str | None) -> None:
    """Change an operator; only the options given change. A new number is told by SMS to the
    old one (it takes the operator's SMS and calls)."""
    from ivr.jobs import telephony_for
    from ivr.operators import edit_operator

    db, vault = _stores()

    def sms(to: str, body: str) -> str:
        return telephony_for(settings()).send_sms(to, body)

    _operator_call(lambda: edit_operator(
        db, vault, operator_id, _actor(), sms=sms, name=name, number=number, languages=languages,
        regions=region_names, timezone=timezone, hours=hours, capacity=capacity, on_duty=on_duty,
        role=role))
    click.echo(f"operator #{operator_id} changed")


@operators.command("disable")
@click.argument("operator_id", type=int)
def operators_disable(operator_id: int) -> None:
    """Take an operator out of assignment (their cases stay theirs until reassigned)."""
    from ivr.operators import edit_operator

    db, vault = _stores()
    _operator_call(lambda: edit_operator(db, vault, operator_id, _actor(), active=False))
    click.echo(f"operator #{operator_id} disabled")


@operators.command("password")
@click.argument("operator_id", type=int)
@click.option("--password-stdin", "from_stdin", is_flag=True, help="Read it from standard input.")
def operators_password(operator_id: int, from_stdin: bool) -> None:
    """Set an operator's console password (12 characters at least); signs them out everywhere."""
    from ivr.console.auth import AuthError, set_password

    db, vault = _stores()
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        set_password(db, operator_id, password, actor=_actor())
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    told = _tell_sign_in_changed(db, vault, operator_id, "password")
    click.echo(f"operator #{operator_id}: password set; at the next sign-in they set up their "
               "authenticator app from a QR code" + told)


@operators.command("reset-2fa")
@click.argument("operator_id", type=int)
def operators_reset_2fa(operator_id: int) -> None:
    """A lost phone: sign the operator out; they enroll a new authenticator at the next sign-in."""
    from ivr.console.auth import AuthError, reset_second_factor

    db, vault = _stores()
    try:
        reset_second_factor(db, operator_id, actor=_actor())
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    told = _tell_sign_in_changed(db, vault, operator_id, "second-factor")
    click.echo(f"operator #{operator_id}: second factor reset" + told)


def _tell_sign_in_changed(db: Database, vault: Vault, operator_id: int, what: str) -> str:
    """SMS the operator that their sign-in changed (OWASP ASVS 2.2.3); what to print of it."""
    from ivr.jobs import telephony_for
    from ivr.operators import tell_sign_in_changed

    def sms(to: str, body: str) -> str:
        return telephony_for(settings()).send_sms(to, body)

    if tell_sign_in_changed(db, vault, sms, operator_id, what):
        return "; they were told by SMS"
    return "; the SMS telling them could not be sent (see the audit log)"


@cases.command("assign")
@click.argument("case_id", type=int)
def cases_assign(case_id: int) -> None:
    """Give a case to an operator by the rule (region, language, duty, load) and say why."""
    from ivr.operators import Choice, assign_case

    db, _vault = _stores()
    choice = _operator_call(lambda: assign_case(db, case_id, actor=_actor()))
    assert isinstance(choice, Choice)
    click.echo(f"case #{case_id}: {choice.reason}")


@cases.command("callback")
@click.argument("case_id", type=int)
def cases_callback(case_id: int) -> None:
    """Call the caller back: ring the case's operator from the hotline number; when they
    answer and press 1, they are connected to the caller. Neither sees the other's number.

    Refused without the caller's consent; outside the caller's safe hours it is scheduled
    for when they open (the worker places it).
    """
    from ivr.callbacks import CallbackError, start_callback
    from ivr.jobs import policy_for, telephony_for

    s = _rest_settings(settings())
    db, vault = _stores()
    try:
        attempt = start_callback(db, vault, telephony_for(s), s.public_base_url, policy_for(s),
                                 case_id, actor=_actor())
    except CallbackError as exc:
        hint = f" (`ivr cases assign {case_id}`)" if exc.said.code == "no-operator" else ""
        raise click.ClickException(f"{exc}{hint}") from None
    click.echo(f"case #{case_id}: calling its operator (attempt {attempt}); they press 1 to be "
               "connected. `ivr cases show` has the outcome.")


# --- regions ------------------------------------------------------------------------------


@main.group()
def regions() -> None:
    """The regions of flows/regions.yaml: where callers call from."""


@regions.command("which")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def regions_which(number: str, as_json: bool) -> None:
    """The region a NUMBER belongs to, and the rule that decided it (`anonymous` works too)."""
    from ivr.routing import load_regions

    s = settings()
    found, problems = load_regions(s.flows_dir / "regions.yaml")
    errors = [p for p in problems if not p.warning]
    if errors:
        for problem in errors:
            click.echo(str(problem), err=True)
        raise click.ClickException("regions.yaml has problems (above); fix them first")
    caller, rule = found.which(number)
    answer = {"region": caller.region, "rule": rule, "language": found.language(caller.region),
              "country": caller.country, "withheld": caller.withheld}
    if as_json:
        click.echo(json.dumps(answer, ensure_ascii=False))
        return
    click.echo(f"{caller.region}: {rule} (language {answer['language']})")


# --- flows --------------------------------------------------------------------------------


@main.group()
def flows() -> None:
    """Check, draw and test the YAML flows."""


@flows.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def flows_check(paths: tuple[Path, ...]) -> None:
    """Report every problem in the flows (default: FLOWS_DIR) as file:line:col: message."""
    from ivr.loader import flow_files, load_set
    from ivr.routing import load_regions

    folder = Path(os.environ.get("FLOWS_DIR") or "flows")
    targets = list(paths) or [folder]
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        raise click.ClickException(f"no such file or folder: {', '.join(missing)}")
    regions_file = next(
        (p / "regions.yaml" for p in targets if p.is_dir()), folder / "regions.yaml"
    )
    regions, problems = load_regions(regions_file)
    names = regions.names() if regions_file.is_file() else None
    result = load_set(flow_files(targets), regions=names)
    problems += result.problems
    for problem in problems:
        click.echo(str(problem))
    errors = [p for p in problems if not p.warning]
    if errors:
        click.echo(f"{len(errors)} problem(s) found; a running hotline keeps serving "
                   "the last good version of a broken flow.")
        sys.exit(1)
    for warning in _coverage(regions, regions_file):
        click.echo(warning)
    summary = ", ".join(f"{f.id}@{f.version} ({len(f.steps)} steps)" for f in result.flows.values())
    click.echo(f"{len(result.flows)} flow(s) OK: {summary}")


def _coverage(regions: Regions, regions_file: Path) -> list[str]:
    """Warnings for regions no active operator covers in their language, when the hotline's
    database can be read (an editor's checkout may have none: then nothing is said)."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from ivr.operators import uncovered
    from ivr.storage import Database

    if not regions.regions:
        return []
    try:
        url = settings().database_url
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
            return []
        db = Database(url)
        if not inspect(db.engine).has_table("operators"):
            return []
        found = uncovered(db, {r.name: r.language for r in regions.regions})
        db.engine.dispose()
    except Exception:  # a database that is down says nothing about the flows
        return []
    return [f"{regions_file}: warning: {w}: its cases go unassigned and are escalated" for w in found]


@flows.command("graph")
@click.argument("flow_id")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write to a file (.svg renders with Graphviz's `dot` when installed).")
def flows_graph(flow_id: str, fmt: str, output: Path | None) -> None:
    """Draw a flow, for an editor to see its shape."""
    import subprocess

    from ivr.flow import dot, mermaid
    from ivr.loader import flow_files, load_set

    s = settings()
    result = load_set(flow_files([s.flows_dir]))
    if flow_id not in result.flows:
        raise click.ClickException(
            f"no flow `{flow_id}` without errors in {s.flows_dir} (run `ivr flows check`)"
        )
    flow = result.flows[flow_id]
    if output is not None and output.suffix == ".svg":
        exe = shutil.which("dot")
        if not exe:
            raise click.ClickException("SVG needs Graphviz's `dot` (apt-get install graphviz)")
        subprocess.run([exe, "-Tsvg", "-o", str(output)], input=dot(flow).encode(), check=True)
        click.echo(f"wrote {output}")
        return
    text = mermaid(flow) if fmt == "mermaid" else dot(flow)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")


@flows.command("test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Print what each scenario heard.")
def flows_test(paths: tuple[Path, ...], verbose: bool) -> None:
    """Run the flows' scenario files (default: FLOWS_DIR/tests/*.yaml)."""
    from ivr.scenarios import run_files, scenario_files

    s = settings()
    files = scenario_files(list(paths) or [s.flows_dir / "tests"])
    if not files:
        raise click.ClickException(f"no scenario files in {s.flows_dir / 'tests'}")
    results = run_files(s, files)
    failed = 0
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        click.echo(f"{mark} {r.where}: {r.name}")
        for problem in r.problems:
            click.echo(f"       {problem}")
        if verbose or not r.ok:
            for line in r.heard:
                click.echo(f"       | {line}")
        failed += not r.ok
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
