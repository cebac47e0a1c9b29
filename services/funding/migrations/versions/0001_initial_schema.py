"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():

    op.create_table('funding_programmes',
    sa.Column('programme_id', sa.Uuid(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=True),
    sa.Column('eligible_count', sa.Integer(), nullable=True),
    sa.Column('budget_cents', sa.BigInteger(), nullable=True),
    sa.Column('fee_cents', sa.BigInteger(), nullable=True),
    sa.Column('guaranteed_per_body', sa.Integer(), nullable=False),
    sa.Column('reserve_until', sa.Date(), nullable=True),
    sa.Column('reserve_released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('granted_guaranteed_cents', sa.BigInteger(), nullable=False),
    sa.Column('granted_pool_cents', sa.BigInteger(), nullable=False),
    sa.Column('confirmations', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('programme_id'),
    sa.UniqueConstraint('code')
    )
    op.create_table('inbox',
    sa.Column('consumer', sa.String(length=120), nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('event_type', sa.String(length=80), nullable=False),
    sa.Column('handled_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id')
    )
    op.create_table('outbox',
    sa.Column('position', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('event_type', sa.String(length=80), nullable=False),
    sa.Column('envelope', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('position'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_published_at'), ['published_at'], unique=False)

    op.create_table('eligible_bodies',
    sa.Column('programme_id', sa.Uuid(), nullable=False),
    sa.Column('ags', sa.String(length=8), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.ForeignKeyConstraint(['programme_id'], ['funding_programmes.programme_id'], ),
    sa.PrimaryKeyConstraint('programme_id', 'ags')
    )
    op.create_table('fundings',
    sa.Column('enrolment_id', sa.Uuid(), nullable=False),
    sa.Column('programme_id', sa.Uuid(), nullable=False),
    sa.Column('ags', sa.String(length=8), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('amount_cents', sa.BigInteger(), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['programme_id'], ['funding_programmes.programme_id'], ),
    sa.PrimaryKeyConstraint('enrolment_id')
    )
    with op.batch_alter_table('fundings', schema=None) as batch_op:
        batch_op.create_index('ix_fundings_programme_body_state', ['programme_id', 'ags', 'state'], unique=False)
        batch_op.create_index('ix_fundings_programme_state_sequence', ['programme_id', 'state', 'sequence'], unique=False)

    op.create_table('ledger_entries',
    sa.Column('position', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('programme_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('pot', sa.String(length=20), nullable=False),
    sa.Column('amount_cents', sa.BigInteger(), nullable=False),
    sa.Column('enrolment_id', sa.Uuid(), nullable=True),
    sa.Column('ags', sa.String(length=8), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['programme_id'], ['funding_programmes.programme_id'], ),
    sa.PrimaryKeyConstraint('position'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_entries_programme_id'), ['programme_id'], unique=False)




def downgrade():

    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_entries_programme_id'))

    op.drop_table('ledger_entries')
    with op.batch_alter_table('fundings', schema=None) as batch_op:
        batch_op.drop_index('ix_fundings_programme_state_sequence')
        batch_op.drop_index('ix_fundings_programme_body_state')

    op.drop_table('fundings')
    op.drop_table('eligible_bodies')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_published_at'))

    op.drop_table('outbox')
    op.drop_table('inbox')
    op.drop_table('funding_programmes')

