"""Alembic's entry point, run by `ivr db upgrade` (ivr/storage.py has the models)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ivr.storage import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "ivr db upgrade sets the database URL"

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
