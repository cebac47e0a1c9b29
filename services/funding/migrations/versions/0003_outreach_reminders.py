"""outreach: the programme's name and reminder days, and which body was reminded in which campaign

Revision ID: 0003_outreach_reminders
Revises: 0002
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0003_outreach_reminders'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('funding_programmes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('remind_days_before', sa.JSON(), nullable=True))
    op.create_table(
        'reminders',
        sa.Column('programme_id', sa.Uuid(), nullable=False),
        sa.Column('campaign', sa.String(length=60), nullable=False),
        sa.Column('ags', sa.String(length=8), nullable=False),
        sa.Column('reminded_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['programme_id'], ['funding_programmes.programme_id']),
        sa.PrimaryKeyConstraint('programme_id', 'campaign', 'ags'),
    )


def downgrade():
    op.drop_table('reminders')
    with op.batch_alter_table('funding_programmes', schema=None) as batch_op:
        batch_op.drop_column('remind_days_before')
        batch_op.drop_column('name')
