"""Alembic migrations: the schema's history. `ivr db upgrade` applies them."""
