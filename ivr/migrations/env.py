"""Alembic's entry point for the data (DATABASE_URL), run by `ivr db upgrade`."""

from __future__ import annotations

from alembic import context

from ivr.migrations import run
from ivr.storage import Base

run(context, Base.metadata)
