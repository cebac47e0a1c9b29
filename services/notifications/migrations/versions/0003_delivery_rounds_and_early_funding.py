"""an index of the pending notices by age, and funding events that came before their enrolment

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade():
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.create_index('ix_notices_pending_by_age', ['created_at'], unique=False,
                              postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_table('early_funding_events',
    sa.Column('event_id', sa.String(length=60), nullable=False),
    sa.Column('enrolment_id', sa.Uuid(), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('early_funding_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_early_funding_events_enrolment_id'),
                              ['enrolment_id'], unique=False)


def downgrade():
    # Funding events still waiting for their enrolment are dropped with the table: downgrade
    # only once it is empty.
    with op.batch_alter_table('early_funding_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_early_funding_events_enrolment_id'))
    op.drop_table('early_funding_events')
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.drop_index('ix_notices_pending_by_age', postgresql_where=PENDING,
                            sqlite_where=PENDING)
