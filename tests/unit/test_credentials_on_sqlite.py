"""Rotating and revoking provider tokens and municipality API keys (SQLite, migrated by Alembic)."""
import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, inspect, text

from services.common.db import DatabaseHandle
from services.common.errors import AuthenticationFailed, NotFound
from services.common.migrations import alembic_config, upgrade
from services.enrolment import domain
from services.enrolment.models import Body, InboxRecord, OutboxMessage
from tests.sqlite_support import migrated_sqlite

REGISTERED = "08226098"
UNREGISTERED = "08226095"  # in the register, never registered for the gateway


@pytest.fixture
def db(tmp_path):
    def seed(session):
        for ags, name in ((REGISTERED, "Wiesloch, Stadt"), (UNREGISTERED, "Walldorf, Stadt")):
            session.add(Body(ags=ags, name=name, kind="gemeinde", designation="Stadt",
                             kreisfrei=False, land="08", kreis_ags="08226000"))
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord, seed)
    yield handle
    handle.dispose()


def refusal(fn):
    """The AuthenticationFailed that ``fn`` raises, as what a caller gets to see."""
    with pytest.raises(AuthenticationFailed) as caught:
        fn()
    return type(caught.value), caught.value.message, caught.value.fields


def provider_auth(db, token):
    return db.run(lambda s: domain.authenticate_provider(s, token).id)


def municipality_auth(db, key):
    return db.run(lambda s: domain.authenticate_municipality(s, key).ags)


def new_provider(db, name="Verwaltungsschule"):
    return db.run(lambda s: (lambda p, t: (p.id, t))(*domain.create_provider(s, name)))


def register(db, ags=REGISTERED, email="digital@wiesloch.example"):
    return db.run(lambda s: domain.register_municipality(s, ags, "Hauptamt", email)[1])


# --- providers ----------------------------------------------------------------------------

def test_rotating_a_provider_token_refuses_the_old_one_at_once(db):
    provider_id, old = new_provider(db)
    issued_before = db.run(lambda s: domain.list_providers(s)[0]["token_issued_at"])
    assert provider_auth(db, old) == provider_id

    rotated_id, new = db.run(lambda s: (lambda p, t: (p.id, t))(
        *domain.rotate_provider_token(s, str(provider_id))))
    assert rotated_id == provider_id and new != old and new.startswith("lp_")
    assert provider_auth(db, new) == provider_id
    assert refusal(lambda: provider_auth(db, old)) == refusal(
        lambda: provider_auth(db, "lp_" + "x" * 43))
    [listed] = db.run(domain.list_providers)
    assert listed["token_issued_at"] > issued_before
    assert listed["token_issued_at"].tzinfo is not None
    assert set(listed) == {"id", "name", "token_issued_at", "revoked_at"}  # no secret


def test_a_provider_is_found_by_its_exact_name_as_well(db):
    provider_id, old = new_provider(db, "VWA Baden")
    _, new = db.run(lambda s: domain.rotate_provider_token(s, "VWA Baden"))
    assert provider_auth(db, new) == provider_id
    refusal(lambda: provider_auth(db, old))


def test_a_revoked_provider_is_refused_like_an_unknown_token_until_rotated(db):
    provider_id, token = new_provider(db)
    other_id, other_token = new_provider(db, "Andere Schule")
    unknown = refusal(lambda: provider_auth(db, "lp_" + "x" * 43))

    db.run(domain.revoke_provider, provider_id)
    assert refusal(lambda: provider_auth(db, token)) == unknown
    assert unknown[1] == "unknown provider token"
    assert provider_auth(db, other_token) == other_id  # only that provider
    first = db.run(lambda s: domain.revoke_provider(s, "Verwaltungsschule").revoked_at)
    assert first.tzinfo is not None
    again = db.run(lambda s: domain.revoke_provider(s, provider_id).revoked_at)
    assert again == first  # repeating is harmless and keeps the first time

    _, fresh = db.run(domain.rotate_provider_token, provider_id)
    assert provider_auth(db, fresh) == provider_id
    refusal(lambda: provider_auth(db, token))  # the revoked token stays dead
    [listed] = [p for p in db.run(domain.list_providers) if p["id"] == provider_id]
    assert listed["revoked_at"] is None


@pytest.mark.parametrize("ref", ["Niemand", str(uuid.uuid4()), uuid.uuid4()])
def test_an_unknown_provider_cannot_be_rotated_or_revoked(db, ref):
    new_provider(db)
    for fn in (domain.rotate_provider_token, domain.revoke_provider):
        with pytest.raises(NotFound) as caught:
            db.run(fn, ref)
        assert "provider" in caught.value.fields


# --- municipalities -----------------------------------------------------------------------

def registered_events(db):
    return db.run(lambda s: s.query(OutboxMessage)
                  .filter(OutboxMessage.event_type == "municipality_registered").count())


def test_rotating_a_key_refuses_the_old_one_and_keeps_the_contact(db):
    old = register(db)
    assert municipality_auth(db, old) == REGISTERED
    account, new = db.run(lambda s: (lambda a, k: ((a.contact_name, a.contact_email,
                                                    a.api_key_prefix, a.key_issued_at), k))(
        *domain.rotate_municipality_key(s, REGISTERED)))
    assert new != old and new.startswith("lk_") and account[2] == new[:10]
    assert account[:2] == ("Hauptamt", "digital@wiesloch.example")
    assert account[3].tzinfo is not None
    assert municipality_auth(db, new) == REGISTERED
    assert refusal(lambda: municipality_auth(db, old)) == refusal(
        lambda: municipality_auth(db, "lk_" + "x" * 43))
    assert registered_events(db) == 1  # the contact did not change: nothing to announce


def test_a_revoked_key_is_refused_like_an_unknown_one_until_a_new_key_is_issued(db):
    key = register(db)
    other = register(db, UNREGISTERED, "digital@walldorf.example")
    unknown = refusal(lambda: municipality_auth(db, "lk_" + "x" * 43))

    first = db.run(lambda s: domain.revoke_municipality_key(s, REGISTERED).revoked_at)
    assert first.tzinfo is not None
    assert refusal(lambda: municipality_auth(db, key)) == unknown
    assert unknown[1] == "unknown API key"
    assert municipality_auth(db, other) == UNREGISTERED  # only that body
    assert db.run(lambda s: domain.revoke_municipality_key(s, REGISTERED).revoked_at) == first

    _, rotated = db.run(domain.rotate_municipality_key, REGISTERED)
    assert municipality_auth(db, rotated) == REGISTERED
    refusal(lambda: municipality_auth(db, key))


def test_registering_a_revoked_body_again_issues_a_working_key(db):
    key = register(db)
    db.run(domain.revoke_municipality_key, REGISTERED)
    fresh = register(db, email="neu@wiesloch.example")
    assert municipality_auth(db, fresh) == REGISTERED
    refusal(lambda: municipality_auth(db, key))
    assert db.run(lambda s: domain.revoke_municipality_key(s, REGISTERED).revoked_at) is not None


@pytest.mark.parametrize("ags", [UNREGISTERED, "09162000"])  # not registered / not in register
def test_an_unregistered_ags_cannot_be_rotated_or_revoked(db, ags):
    register(db)
    for fn in (domain.rotate_municipality_key, domain.revoke_municipality_key):
        with pytest.raises(NotFound) as caught:
            db.run(fn, ags)
        assert "ags" in caught.value.fields


# --- the migration ------------------------------------------------------------------------

def test_migration_keeps_existing_providers_and_goes_back_down(tmp_path):
    from alembic import command
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade("enrolment", url, "0001")
    created = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO providers (id, name, token_hash, created_at) "
                          "VALUES (:id, 'VWA', :hash, :created)"),
                     {"id": uuid.uuid4().hex, "hash": domain.hash_secret("lp_old"),
                      "created": created.replace(tzinfo=None)})
    upgrade("enrolment", url)
    handle = DatabaseHandle(url, "enrolment", OutboxMessage, InboxRecord)
    try:
        [provider] = handle.run(domain.list_providers)
        assert provider["token_issued_at"] == created and provider["revoked_at"] is None
        assert handle.run(lambda s: domain.authenticate_provider(s, "lp_old").name) == "VWA"
    finally:
        handle.dispose()
    command.downgrade(alembic_config("enrolment", url), "0001")
    columns = {c["name"] for c in inspect(engine).get_columns("providers")}
    assert "revoked_at" not in columns and "token_issued_at" not in columns
    assert "revoked_at" not in {c["name"] for c in inspect(engine).get_columns(
        "municipality_accounts")}
    engine.dispose()
