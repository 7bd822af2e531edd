"""Settings, read from the environment once at start-up and checked all together.

In development (the default) every setting has a safe local value, so a fresh checkout
answers calls with nothing configured. With `IVR_ENV=production` the settings that protect
callers (the Twilio credentials, the public https URL, the hotline number, a real
database) must be given; a missing one stops start-up with one line saying which and how.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
DEV_ACCOUNT_SID = "AC" + "0" * 32
DEV_AUTH_TOKEN = "dev-auth-token-not-secret"
DEV_HOTLINE = "+15005550006"


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    twilio_account_sid: str = DEV_ACCOUNT_SID
    twilio_auth_token: str = DEV_AUTH_TOKEN
    public_base_url: str = "http://127.0.0.1:5000"
    twilio_api_base: str = "https://api.twilio.com"
    database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    flows_dir: Path = Path("flows")
    instance_dir: Path = Path("instance")
    hotline_number: str = DEV_HOTLINE
    entry_flow: str = "hotline"
    transfer_numbers: tuple[str, ...] = ()
    log_level: str = "INFO"
    data_keys: str = ""  # IVR_DATA_KEYS; never logged
    keystore_url: str = "sqlite:///instance/keys.db"
    key_epoch_dir: Path | None = None  # KEY_EPOCH_DIR; None: INSTANCE_DIR/key-epochs
    retention_days: int = 30
    transcribe_engines: str = "en=whisper-tiny-en,ru=whisper-base,uk=whisper-base"
    transcribe_threads: int = 1
    transcribe_cache: Path | None = None  # TRANSCRIBE_CACHE; None: INSTANCE_DIR/models
    outbox_flush_seconds: float = 5.0
    webhook_db_wait: float = 1.5  # seconds a webhook waits for the database before spooling
    reconcile_minutes: int = 5  # how often the housekeeper lists the recordings at Twilio
    callback_daytime: str = "09:00-21:00"
    callback_retry_minutes: tuple[int, ...] = (15, 60, 240)
    reoffer_minutes: int = 30
    urgent_reoffer_minutes: int = 10  # an urgent case (an intake answer "at the front")
    transfer_ring_max: int = 3
    console_secret_key: str = ""  # CONSOLE_SECRET_KEY; never logged
    console_idle_minutes: int = 30
    hotline_timezone: str = "Europe/Kyiv"  # the console's times, for operators without their own
    # TWILIO_WEBHOOK_SHARED_KEYS: Twilio SharedKey ids and their secrets; never logged
    webhook_shared_keys: tuple[tuple[str, str], ...] = ()
    healthz_token: str = ""  # HEALTHZ_TOKEN; never logged
    redis_namespace: str = "ivr"  # REDIS_NAMESPACE, or derived from the install (load_settings)
    trusted_proxies: int = 0  # proxy hops in front of the app whose X-Forwarded-* are believed
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def epoch_dir(self) -> Path:
        """Where the key epochs (the keys that wrap the data keys) live, outside any database."""
        return self.key_epoch_dir or self.instance_dir / "key-epochs"

    @property
    def model_cache(self) -> Path:
        """Where bundled speech models are joined once (TRANSCRIBE_CACHE, else INSTANCE_DIR/models)."""
        return self.transcribe_cache if self.transcribe_cache is not None else self.instance_dir / "models"

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# name -> (what it is, needed in production)
SETTINGS: dict[str, tuple[str, bool]] = {
    "IVR_ENV": ("development or production", False),
    "TWILIO_ACCOUNT_SID": ("the Twilio account SID (AC…)", True),
    "TWILIO_AUTH_TOKEN": ("the Twilio auth token that signs webhooks", True),
    "PUBLIC_BASE_URL": ("the https URL Twilio calls, e.g. https://hotline.example.org", True),
    "TWILIO_API_BASE": ("Twilio's REST API base URL", False),
    "DATABASE_URL": ("an SQLAlchemy database URL (PostgreSQL in production)", True),
    "REDIS_URL": ("the Redis URL for background jobs", False),
    "FLOWS_DIR": ("the folder of YAML flows", False),
    "INSTANCE_DIR": ("the folder for local state (SQLite file, flow versions)", False),
    "HOTLINE_NUMBER": ("the hotline's Twilio number in E.164 form, e.g. +380441234567", True),
    "ENTRY_FLOW": ("the flow id that answers incoming calls", False),
    "TRANSFER_NUMBERS": ("comma-separated E.164 numbers a transfer step rings", False),
    "LOG_LEVEL": ("DEBUG, INFO, WARNING or ERROR", False),
    "KEYSTORE_URL": ("the database of data keys, apart from DATABASE_URL and its backups "
                     "(default: SQLite instance/keys.db)", True),
    "KEY_EPOCH_DIR": ("the folder of key epochs, the keys that wrap the data keys, kept outside "
                      "any database; every process must share it (default: INSTANCE_DIR/key-epochs)",
                      False),
    "IVR_DATA_KEYS": ("master keys, newest first: `id:base64key,…` (make one: `ivr keys new`)",
                      True),
    "RETENTION_DAYS": ("days a closed case's number, audio and transcript are kept", False),
    "TRANSCRIBE_ENGINES": ("speech engine per language, e.g. en=whisper-tiny-en,"
                           "ru=whisper-base,uk=vosk:/srv/asr/vosk-model-small-uk", False),
    "TRANSCRIBE_CACHE": ("the folder where the bundled Whisper base model is joined once "
                         "(default: INSTANCE_DIR/models)", False),
    "TRANSCRIBE_THREADS": ("CPU threads per transcription in a worker (default 1)", False),
    "OUTBOX_FLUSH_SECONDS": ("how often a web process re-tries enqueueing jobs Redis missed",
                             False),
    "WEBHOOK_DB_WAIT": ("seconds a recording webhook waits for the database before it keeps the "
                        "report in the local spool instead (default 1.5)", False),
    "RECONCILE_MINUTES": ("how often the worker lists the recordings at Twilio and files any the "
                          "service does not know (default 5)", False),
    "CALLBACK_DAYTIME": ("the caller's local hours that a `day` consent allows, e.g. 09:00-21:00",
                         False),
    "CALLBACK_RETRY_MINUTES": ("waits between callback attempts; one more attempt than waits, "
                               "e.g. 15,60,240", False),
    "REOFFER_MINUTES": ("minutes an operator has to act on a case before it goes to the next",
                        False),
    "TRANSFER_RING_MAX": ("how many matching operators a live transfer rings at once (1-10)",
                          False),
    "CONSOLE_SECRET_KEY": ("a long random string that signs console sessions and forms "
                           "(make one: python -c 'import secrets; print(secrets.token_urlsafe(48))')",
                           True),
    "CONSOLE_IDLE_MINUTES": ("minutes without a request after which a console session ends", False),
    "HOTLINE_TIMEZONE": ("the hotline's time zone: the console shows times in it to operators "
                         "who have none of their own (default Europe/Kyiv)", False),
    "TWILIO_WEBHOOK_SHARED_KEYS": ("Twilio SharedKey signing keys, `keyid:secret,…`, when a "
                                   "Webhook Rule signs the hotline's webhooks with them", False),
    "HEALTHZ_TOKEN": ("a long random string: `Authorization: Bearer …` shows /healthz's details",
                      False),
    "REDIS_NAMESPACE": ("a prefix for this install's Redis queues, job ids and locks (default: "
                        "derived from DATABASE_URL)", False),
    "TRUSTED_PROXIES": ("how many proxies (TLS terminator, load balancer) stand in front of the app; "
                        "their X-Forwarded-For/-Proto/-Host name the real client (default 0)", False),
}


NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def default_namespace(database_url: str) -> str:
    """`ivr-` and a short hash of the install's database URL (without its password): two
    installs on one machine sharing a Redis never share a queue or a lock, while the web and
    worker processes of one install, on whatever machine, agree (they share the database)."""
    import hashlib

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        seed = make_url(database_url)._replace(password=None).render_as_string(hide_password=False)
    except ArgumentError:
        seed = database_url
    return "ivr-" + hashlib.sha256(seed.encode()).hexdigest()[:10]


def parse_shared_keys(text: str) -> tuple[tuple[str, str], ...]:
    """`keyid:secret,keyid2:secret2` (two during a rotation); ValueError naming no secret."""
    keys: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key_id, _, secret = item.partition(":")
        if not key_id.strip() or not secret.strip():
            raise ValueError("TWILIO_WEBHOOK_SHARED_KEYS must be `keyid:secret` pairs separated "
                             "by commas (the SharedKey id Twilio names, and its secret)")
        keys.append((key_id.strip(), secret.strip()))
    return tuple(keys)


def parse_daytime(text: str) -> tuple[int, int] | None:
    """`09:00-21:00` as minutes of the day; None when it is not such a span."""
    m = re.fullmatch(r"(\d{1,2}):(\d\d)-(\d{1,2}):(\d\d)", text.strip())
    if not m:
        return None
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or start >= end or end > 24 * 60:
        return None
    return start, end


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise ConfigError with one line per wrong setting.

    Each setting gets at most one line, the first thing wrong with it (a missing one is not
    also "not https"), saying what to set. Secrets and database URLs (they may hold a
    password) are never repeated in a message.
    """
    env = dict(os.environ if environ is None else environ)

    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    problems: dict[str, str] = {}

    def problem(name: str, text: str) -> None:
        problems.setdefault(name, text)

    mode = get("IVR_ENV") or "development"
    if mode not in ("development", "production"):
        problem("IVR_ENV", f"IVR_ENV is {mode!r}: set it to production, or to development "
                           "(the default)")
    production = mode == "production"
    if production:
        for name, (what, needed) in SETTINGS.items():
            if needed and not get(name):
                problem(name, f"{name} is not set: set it to {MISSING.get(name, what)}")
    base = Settings()
    instance = Path(get("INSTANCE_DIR") or base.instance_dir)
    values: dict[str, Any] = {
        "env": mode,
        "twilio_account_sid": get("TWILIO_ACCOUNT_SID") or base.twilio_account_sid,
        "twilio_auth_token": get("TWILIO_AUTH_TOKEN") or base.twilio_auth_token,
        "public_base_url": (get("PUBLIC_BASE_URL") or base.public_base_url).rstrip("/"),
        "twilio_api_base": (get("TWILIO_API_BASE") or base.twilio_api_base).rstrip("/"),
        "database_url": get("DATABASE_URL") or f"sqlite:///{(instance / 'ivr.db').resolve()}",
        "keystore_url": get("KEYSTORE_URL") or f"sqlite:///{(instance / 'keys.db').resolve()}",
        "redis_url": get("REDIS_URL") or base.redis_url,
        "flows_dir": Path(get("FLOWS_DIR") or base.flows_dir),
        "instance_dir": instance,
        "key_epoch_dir": Path(get("KEY_EPOCH_DIR")) if get("KEY_EPOCH_DIR") else None,
        "hotline_number": get("HOTLINE_NUMBER") or base.hotline_number,
        "entry_flow": get("ENTRY_FLOW") or base.entry_flow,
        "transfer_numbers": tuple(n.strip() for n in get("TRANSFER_NUMBERS").split(",") if n.strip()),
        "log_level": (get("LOG_LEVEL") or base.log_level).upper(),
        "data_keys": get("IVR_DATA_KEYS"),
        "console_secret_key": get("CONSOLE_SECRET_KEY"),
        "healthz_token": get("HEALTHZ_TOKEN"),
        "transcribe_engines": get("TRANSCRIBE_ENGINES") or base.transcribe_engines,
        "transcribe_cache": Path(get("TRANSCRIBE_CACHE")) if get("TRANSCRIBE_CACHE") else None,
    }
    for name, key, default, low, unit, example in (
        ("RETENTION_DAYS", "retention_days", base.retention_days, 1, "a number of days", "30"),
        ("OUTBOX_FLUSH_SECONDS", "outbox_flush_seconds", base.outbox_flush_seconds, 0,
         "a number of seconds", "5"),
        ("WEBHOOK_DB_WAIT", "webhook_db_wait", base.webhook_db_wait, 0.1, "a number of seconds", "1.5"),
    ):
        raw = get(name)
        try:
            number = float(raw) if raw else default
        except ValueError:
            number = -1
        if number < low or number != number or number == float("inf"):
            problem(name, f"{name} is {raw!r}: set it to {unit}, at least {low:g} (e.g. {example})")
            number = default
        values[key] = int(number) if key == "retention_days" else number
    daytime = get("CALLBACK_DAYTIME") or base.callback_daytime
    if parse_daytime(daytime) is None:
        problem("CALLBACK_DAYTIME", f"CALLBACK_DAYTIME is {daytime!r}: set it to the hours a "
                                    "daytime callback may ring, start before end, e.g. 09:00-21:00")
    values["callback_daytime"] = daytime
    retries = get("CALLBACK_RETRY_MINUTES")
    try:
        values["callback_retry_minutes"] = (tuple(int(x) for x in retries.split(",") if x.strip())
                                            if retries else base.callback_retry_minutes)
        if any(m < 1 for m in values["callback_retry_minutes"]):
            raise ValueError
    except ValueError:
        problem("CALLBACK_RETRY_MINUTES", f"CALLBACK_RETRY_MINUTES is {retries!r}: set it to whole "
                                          "minutes separated by commas, e.g. 15,60,240")
    for name, key, default, low, high in (
        ("REOFFER_MINUTES", "reoffer_minutes", base.reoffer_minutes, 1, 10080),
        ("URGENT_REOFFER_MINUTES", "urgent_reoffer_minutes", base.urgent_reoffer_minutes, 1, 10080),
        ("TRANSFER_RING_MAX", "transfer_ring_max", base.transfer_ring_max, 1, 10),
        ("CONSOLE_IDLE_MINUTES", "console_idle_minutes", base.console_idle_minutes, 1, 720),
        ("RECONCILE_MINUTES", "reconcile_minutes", base.reconcile_minutes, 1, 1440),
        ("TRUSTED_PROXIES", "trusted_proxies", base.trusted_proxies, 0, 5),
    ):
        raw = get(name)
        if raw and not (raw.isdigit() and low <= int(raw) <= high):
            problem(name, f"{name} is {raw!r}: set it to a whole number from {low} to {high} "
                          f"(default {default})")
        else:
            values[key] = int(raw) if raw else default
    from ivr.transcribe import parse_engines, parse_threads

    try:
        parse_engines(values["transcribe_engines"])
    except ValueError as exc:
        problem("TRANSCRIBE_ENGINES", str(exc))
    try:
        values["transcribe_threads"] = parse_threads(get("TRANSCRIBE_THREADS"))
    except ValueError as exc:
        problem("TRANSCRIBE_THREADS", str(exc))
    if values["data_keys"]:
        from ivr.keys import parse_master_keys

        try:
            parse_master_keys(values["data_keys"])
        except ConfigError as exc:
            problem("IVR_DATA_KEYS", str(exc))
    for name in ("DATABASE_URL", "KEYSTORE_URL"):
        if get(name) and not _database_url(get(name)):
            problem(name, f"{name} is not a database URL: set it like "
                          f"postgresql+psycopg://USER:PASSWORD@HOST/{'ivr_keys' if 'KEY' in name else 'ivr'}")
    same = values["keystore_url"] == values["database_url"]
    if same and values["database_url"].startswith("sqlite"):
        problem("KEYSTORE_URL", "KEYSTORE_URL names the same SQLite file as DATABASE_URL: set it "
                                "to another file, e.g. sqlite:///instance/keys.db")
    elif production and same:
        problem("KEYSTORE_URL", "KEYSTORE_URL names the same database as DATABASE_URL: set it to "
                                "a database of its own (a backup of the data must not hold the "
                                "keys that open it), e.g. …/ivr_keys")
    url = values["public_base_url"]
    if get("PUBLIC_BASE_URL"):
        if not re.match(r"^https?://[^/\s?#@]+(/[^\s?#]*)?$", url):
            problem("PUBLIC_BASE_URL", f"PUBLIC_BASE_URL {url!r} is not a web address: set it to the "
                                       "address Twilio calls, e.g. https://hotline.example.org")
        elif production and not url.startswith("https://"):
            problem("PUBLIC_BASE_URL", f"PUBLIC_BASE_URL {url!r} is not https: set it to the https "
                                       "address Twilio calls, e.g. https://hotline.example.org")
    sid = get("TWILIO_ACCOUNT_SID")
    if sid and not ACCOUNT_SID.match(sid):
        problem("TWILIO_ACCOUNT_SID", "TWILIO_ACCOUNT_SID is not an account SID: set it to AC and 32 "
                                      "hex digits, as the Twilio console shows it")
    api_problem = _api_base_problem(values["twilio_api_base"])
    if get("TWILIO_API_BASE") and api_problem:
        problem("TWILIO_API_BASE", api_problem)
    if get("HOTLINE_NUMBER") and not E164.match(values["hotline_number"]):
        problem("HOTLINE_NUMBER", f"HOTLINE_NUMBER {values['hotline_number']!r} is not in E.164 form: "
                                  "set it to + and the country code and number, e.g. +380441234567")
    for number in values["transfer_numbers"]:
        if not E164.match(number):
            problem("TRANSFER_NUMBERS", f"TRANSFER_NUMBERS has {number!r}, not in E.164 form: set it to "
                                        "numbers separated by commas, e.g. +380441112233,+380441112234")
            break
    if values["console_secret_key"] and len(values["console_secret_key"]) < 32:
        problem("CONSOLE_SECRET_KEY", "CONSOLE_SECRET_KEY is too short: set it to 32 or more random "
                                      "characters, e.g. the output of "
                                      "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'")
    if production and get("TWILIO_AUTH_TOKEN") == DEV_AUTH_TOKEN:
        problem("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN is the development placeholder: set it to "
                                     "your account's auth token, from the Twilio console")
    try:
        values["webhook_shared_keys"] = parse_shared_keys(get("TWILIO_WEBHOOK_SHARED_KEYS"))
    except ValueError as exc:
        problem("TWILIO_WEBHOOK_SHARED_KEYS", str(exc))
    if values["healthz_token"] and len(values["healthz_token"]) < 24:
        problem("HEALTHZ_TOKEN", "HEALTHZ_TOKEN is too short: set it to 24 or more random characters")
    values["hotline_timezone"] = get("HOTLINE_TIMEZONE") or base.hotline_timezone
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(values["hotline_timezone"])
    except (ValueError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        problem("HOTLINE_TIMEZONE", f"HOTLINE_TIMEZONE {values['hotline_timezone']!r} is not a time "
                "zone: set it like Europe/Kyiv")
    namespace = get("REDIS_NAMESPACE")
    if namespace and not NAMESPACE.match(namespace):
        problem("REDIS_NAMESPACE", f"REDIS_NAMESPACE {namespace!r} has other characters: set it to "
                                   "1-40 letters, digits, `_`, `.` or `-`, e.g. ivr-kyiv")
    values["redis_namespace"] = namespace or default_namespace(values["database_url"])
    if values["log_level"] not in LOG_LEVELS:
        problem("LOG_LEVEL", f"LOG_LEVEL is {values['log_level']!r}: set it to DEBUG, INFO, WARNING "
                             "or ERROR")
    if not values["flows_dir"].is_dir():
        problem("FLOWS_DIR", f"FLOWS_DIR {str(values['flows_dir'])!r} is not a folder: set it to the "
                             "folder of the YAML flows, e.g. flows")
    if problems:
        order = list(SETTINGS)  # the order of .env.example
        raise ConfigError(*(text for _name, text in sorted(
            problems.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))))
    return Settings(**values)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")

# What a missing production setting is to be set to, where SETTINGS' description is not enough.
MISSING = {
    "TWILIO_ACCOUNT_SID": "your Twilio account SID, AC and 32 hex digits, from the Twilio console",
    "TWILIO_AUTH_TOKEN": "your Twilio account's auth token, from the Twilio console",
    "PUBLIC_BASE_URL": "the https address Twilio calls, e.g. https://hotline.example.org",
    "DATABASE_URL": "the PostgreSQL database, e.g. postgresql+psycopg://USER:PASSWORD@HOST/ivr",
    "KEYSTORE_URL": "a PostgreSQL database of its own for the data keys, "
                    "e.g. postgresql+psycopg://USER:PASSWORD@HOST/ivr_keys",
    "HOTLINE_NUMBER": "the hotline's Twilio number in E.164 form, e.g. +380441234567",
    "IVR_DATA_KEYS": "a master key, `id:base64key` (make one with `ivr keys new`)",
    "CONSOLE_SECRET_KEY": "32 or more random characters, e.g. the output of "
                          "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'",
}


def _database_url(text: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return bool(make_url(text).drivername)
    except (ArgumentError, ValueError):
        return False


def _api_base_problem(base: str) -> str | None:
    """What is wrong with TWILIO_API_BASE (the checks TwilioProvider makes), or None."""
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    if (parts.scheme not in ("https", "http") or not parts.hostname or parts.query
            or parts.fragment or parts.username):
        return (f"TWILIO_API_BASE {base!r} is not a web address: set it to https://api.twilio.com "
                "(the default)")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        return (f"TWILIO_API_BASE {base!r} is plain http: set it to an https address, e.g. "
                "https://api.twilio.com (http only on 127.0.0.1)")
    return None


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


EXIT_CONFIG = 78  # sysexits' EX_CONFIG: a supervisor should not restart the process as is


def explain(exc: ConfigError) -> str:
    """What a process prints when its settings stop it (the web, the worker, every `ivr`
    command): a heading, then one line per setting; exit with EXIT_CONFIG."""
    lines = exc.problems
    if len(lines) == 1:
        return f"ivr: cannot start: {lines[0]}"
    return (f"ivr: cannot start: {len(lines)} settings need fixing (environment or .env):\n"
            + "\n".join(f"  {line}" for line in lines))
