"""data protection: markers of enrolments whose participant was erased

Revision ID: privacy_funding_0001
Revises: 0003_outreach_reminders
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = 'privacy_funding_0001'
down_revision = '0003_outreach_reminders'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'erased_enrolments',
        sa.Column('enrolment_id', sa.Uuid(), nullable=False),
        sa.Column('erasure_id', sa.Uuid(), nullable=False),
        sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('enrolment_id'))


def downgrade():
    op.drop_table('erased_enrolments')
