"""Alembic's entry point for the key store (KEYSTORE_URL), run by `ivr db upgrade`.

Its own version table, so the key store may share a database with the data (as in tests)
or, as it should in production, live in a database of its own with short-lived backups.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ivr.storage import KeyBase

VERSION_TABLE = "alembic_version_keystore"
config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "ivr db upgrade sets the key store URL"

if context.is_offline_mode():
    context.configure(url=url, target_metadata=KeyBase.metadata, literal_binds=True,
                      version_table=VERSION_TABLE, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=KeyBase.metadata,
                          version_table=VERSION_TABLE,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
