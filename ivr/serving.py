"""gunicorn settings for the `web` process (`gunicorn -c python:ivr.serving 'ivr:create_app()'`).

Settings are checked in the master before any worker starts, so wrong settings stop
start-up with one line each (exit 78) instead of a traceback per worker.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dotenv import load_dotenv

from ivr.config import EXIT_CONFIG, explain, load_settings
from ivr.errors import ConfigError

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"  # measured: even spread across workers, see bench/webhooks.py
timeout = 30
graceful_timeout = 10
control_socket_disable = True  # several hotlines (or a benchmark) may run on one machine
accesslog = None  # request lines carry call state tokens; nothing a caller needs logged


def on_starting(server: Any) -> None:
    load_dotenv(os.environ.get("IVR_DOTENV", ".env"), override=False)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(explain(exc), file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG)
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    from ivr.jobs import prepare_stores

    # once, in the master, before any worker answers a call
    prepare_stores(settings)
