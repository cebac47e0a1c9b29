"""A service's database as an SQLite file migrated by its own Alembic migrations."""
from services.common.db import DatabaseHandle
from services.common.migrations import upgrade


def migrated_sqlite(tmp_path, service: str, outbox_model, inbox_model, seed=None):
    """A handle on a fresh, migrated database of ``service``; ``seed(session)`` fills it."""
    url = f"sqlite:///{tmp_path / (service + '.sqlite')}"
    upgrade(service, url)
    handle = DatabaseHandle(url, service, outbox_model, inbox_model)
    if seed is not None:
        handle.run(seed)
    return handle
