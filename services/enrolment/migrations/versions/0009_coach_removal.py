"""a coach who leaves the programme is kept, with the moment their access ended

Revision ID: 0009_coach_removal
Revises: 0008_coach_desk
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_coach_removal'
down_revision = '0008_coach_desk'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('coaches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('coaches', schema=None) as batch_op:
        batch_op.drop_column('removed_at')
