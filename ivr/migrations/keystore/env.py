"""Alembic's entry point for the key store (KEYSTORE_URL), run by `ivr db upgrade`.

Its own version table, so the key store may share a database with the data (as in tests)
or, as it should in production, live in a database of its own with short-lived backups.
"""

from __future__ import annotations

from alembic import context

from ivr.migrations import run
from ivr.storage import KeyBase

run(context, KeyBase.metadata, version_table="alembic_version_keystore")
