"""The database: one SQLAlchemy engine per process, from DATABASE_URL.

SQLite under `instance/` is the embedded default for a first run; PostgreSQL in production.
Tables arrive with the voicemail pipeline; today the call path needs no database at all,
and /healthz reports whether the configured one answers.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            parsed = make_url(self.url)
            if parsed.get_backend_name() == "sqlite" and parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self._engine = create_engine(self.url, pool_pre_ping=True)
        return self._engine

    def ping(self) -> str | None:
        """None when the database answers, else a short reason without credentials."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return type(getattr(exc, "orig", None) or exc).__name__
        except OSError as exc:
            return type(exc).__name__
        return None

    @property
    def backend(self) -> str:
        return make_url(self.url).get_backend_name()
