"""each body's position from the register (a Kreis or Bezirk at the centre of its Gemeinden), for the office's map

Revision ID: 0004_body_coordinates
Revises: 0003
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_body_coordinates'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('bodies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('longitude', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('latitude', sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table('bodies', schema=None) as batch_op:
        batch_op.drop_column('latitude')
        batch_op.drop_column('longitude')
