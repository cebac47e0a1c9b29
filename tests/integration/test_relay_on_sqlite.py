"""The embedded default (SQLite) keeps writing while the broker is slow: the relay holds no
transaction (and so neither SQLite's write lock nor the process's one connection) while it
waits for the broker."""

import eventlet

from services.common.db import open_database
from services.common.messaging import OutboxRelay
from services.common.migrations import upgrade
from services.enrolment import domain
from services.enrolment.models import InboxRecord, OutboxMessage
from tests.integration.helpers import PROGRAMME, bw_records, wait_for


def test_writes_go_on_while_the_relay_waits_for_a_silent_broker(tmp_path, register_file):
    from services.enrolment.register import import_register

    config = {"LOTSEN_HOME": str(tmp_path)}
    upgrade("enrolment", f"sqlite:///{tmp_path / 'enrolment.sqlite'}")
    handle = open_database(config, "enrolment", OutboxMessage, InboxRecord)
    handle.run(import_register, bw_records(register_file))
    handle.run(domain.create_programme, dict(PROGRAMME))  # an event waits in the outbox

    silent = eventlet.listen(("127.0.0.1", 0))  # accepts, then never says a word
    accepted = []
    eventlet.spawn_n(lambda: accepted.append(silent.accept()))
    relay = OutboxRelay(handle, "enrolment", dict(
        config, AMQP_URI=f"pyamqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}/"))
    relay.publisher.confirm_timeout_s = 20
    waiting = eventlet.spawn(relay.publish_pending)
    try:
        wait_for(lambda: accepted, message="the relay is talking to the broker")
        eventlet.sleep(0.2)
        # A write, while the relay still waits for the broker's first word.
        provider, _ = handle.run(domain.create_provider, "Volkshochschule Wiesloch")
        assert provider.id is not None
        assert not waiting.dead, "the relay should still be waiting for the broker"
    finally:
        waiting.kill()
        relay.close()
        for connection, _ in accepted:
            connection.close()
        silent.close()
        handle.dispose()
    # Nothing was marked published: the event goes out when the broker answers.
    handle = open_database(config, "enrolment", OutboxMessage, InboxRecord)
    try:
        assert handle.run(lambda s: s.query(OutboxMessage).filter(
            OutboxMessage.published_at.is_(None)).count()) == 1
    finally:
        handle.dispose()
