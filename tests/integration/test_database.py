"""The database layer on the real PostgreSQL: migrations and cooperative queries."""
import eventlet
from sqlalchemy import create_engine, inspect, text

from services.common.db import make_engine
from services.common.migrations import alembic_config


def test_migrations_build_the_schema_on_an_empty_database_and_roll_back(empty_pg_url):
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config("enrolment", empty_pg_url)
    command.upgrade(config, "head")
    engine = create_engine(empty_pg_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"bodies", "programmes", "providers", "courses", "modules", "enrolments",
                "attendance", "municipality_accounts", "idempotency_records", "outbox",
                "inbox"} <= tables
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert version == ScriptDirectory.from_config(config).get_current_head()
        command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        command.upgrade(config, "head")
    finally:
        engine.dispose()


def test_a_waiting_query_does_not_stall_the_process(pg_url):
    """psycopg2 under eventlet's patching: while one green thread waits inside PostgreSQL,
    another runs. If it did not, the release below could never happen and the waiting query
    would fail on its lock timeout."""
    engine = make_engine(pg_url, pool_size=4)
    order, waiter_pid = [], []
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(4242)"))

            def waiter():
                with engine.connect() as conn:
                    conn.execute(text("SET lock_timeout = '10s'"))
                    waiter_pid.append(conn.execute(text("SELECT pg_backend_pid()")).scalar())
                    order.append("waiting")
                    conn.execute(text("SELECT pg_advisory_lock(4242)"))
                    order.append("acquired")
                    conn.execute(text("SELECT pg_advisory_unlock(4242)"))

            thread = eventlet.spawn(waiter)
            state = None
            with engine.connect() as observer:
                for _ in range(400):
                    if waiter_pid:
                        state = observer.execute(text(
                            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                            {"pid": waiter_pid[0]}).scalar()
                        if state == "Lock":
                            break
                    eventlet.sleep(0.05)
            # We got here while the other green thread sat inside its blocked query.
            assert (state, order) == ("Lock", ["waiting"])
            order.append("releasing")
            holder.execute(text("SELECT pg_advisory_unlock(4242)"))
            thread.wait()
        assert order == ["waiting", "releasing", "acquired"]
    finally:
        engine.dispose()
