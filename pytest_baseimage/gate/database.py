"""Which store a gate.toml asks for: an SQLite path, or a postgresql:// URL for several replicas.

The PostgreSQL backend (and psycopg with it) is imported only when one is configured.
"""

from __future__ import annotations

from .config import Loaded
from .store import Store
from .store_sqlite import SqliteStore


def open_store(loaded: Loaded) -> Store:
    """Open (and create the tables of) the configured database; StoreUnavailable if it cannot be reached."""
    config = loaded.config
    if config.postgres:
        from .store_pg import PgStore

        return PgStore(config.database, loaded.secrets.database_password, lease=config.lease_s)
    return SqliteStore(loaded.path(config.database), lease=config.lease_s)
