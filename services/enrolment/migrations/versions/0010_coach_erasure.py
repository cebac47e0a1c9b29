"""a coach who left may be erased: the moment their name and address were replaced

Revision ID: 0010_coach_erasure
Revises: 0009_coach_removal
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = '0010_coach_erasure'
down_revision = '0009_coach_removal'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('coaches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('coaches', schema=None) as batch_op:
        batch_op.drop_column('erased_at')
