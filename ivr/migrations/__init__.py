"""Alembic migrations: the data here, the key store in keystore/ (both run by `ivr db upgrade`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, create_engine


def run(context: Any, metadata: MetaData, version_table: str = "alembic_version") -> None:
    """What each env.py does: migrate the configured URL to `metadata`, online or offline."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "ivr db upgrade sets the database URL"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True,
                          version_table=version_table, render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, version_table=version_table,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
