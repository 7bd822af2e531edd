"""The operator console: server-rendered pages under /console/ where operators work cases.

    auth.py     passwords, TOTP, throttling, sessions on the server
    views.py    the pages, the audio, the JSON endpoints and the actions (one blueprint)
    queries.py  what the pages read (the queue, a case, the dashboard's figures)
    i18n.py     Ukrainian and English

`init_console` wires it into the app: the session cookie, CSRF protection for the console's
forms (Flask-WTF; Twilio's webhooks are exempt, they are signed instead) and the services
the views use. No JavaScript is needed for anything; there is no build step.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from ivr.callbacks import Policy, Telephony
from ivr.config import Settings
from ivr.console.auth import MAX_SESSION, Guard
from ivr.keys import instance_secret
from ivr.registry import FlowRegistry
from ivr.storage import Database, Vault

if TYPE_CHECKING:
    from flask import Flask


@dataclass
class Console:
    settings: Settings
    db: Database
    vault: Vault
    guard: Guard
    registry: FlowRegistry
    policy: Policy
    telephony: Telephony | None  # None until first needed (it builds a Twilio client)


def init_console(app: Flask, settings: Settings, db: Database, vault: Vault,
                 registry: FlowRegistry, policy: Policy) -> None:
    from flask_wtf.csrf import CSRFProtect

    from ivr.console import views

    secure = settings.public_base_url.startswith("https://")
    key = settings.console_secret_key or instance_secret(
        settings.instance_dir, "console-secret-key", lambda: secrets.token_urlsafe(48),
        "a development key for console sessions; set CONSOLE_SECRET_KEY in production")
    app.config.update(
        SECRET_KEY=key,
        # __Host- cookies must be Secure, on this host only, for every path: on https only.
        SESSION_COOKIE_NAME="__Host-console" if secure else "console",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=MAX_SESSION,
        WTF_CSRF_TIME_LIMIT=int(timedelta(hours=2).total_seconds()),
        # No Referer check on https: every page says `Referrer-Policy: no-referrer`, so browsers
        # send none and behind a TLS proxy (TRUSTED_PROXIES) every form would be refused. The
        # token and the SameSite=Strict __Host- cookie carry the protection.
        WTF_CSRF_SSL_STRICT=False,
    )
    guard = Guard(db, settings.redis_url, key, settings.redis_namespace)
    app.extensions["ivr.console"] = Console(settings, db, vault, guard, registry, policy, None)
    csrf = CSRFProtect()
    csrf.init_app(app)
    for name, blueprint in app.blueprints.items():
        if name != "console":
            csrf.exempt(blueprint)  # Twilio's webhooks are signed; /healthz takes no forms
    app.register_blueprint(views.bp)
