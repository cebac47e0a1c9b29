"""whether a programme funds anything, as its programme-published event says

Revision ID: 0004_unfunded_programmes
Revises: privacy_funding_0001
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_unfunded_programmes'
down_revision = 'privacy_funding_0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('funding_programmes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('funded', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def downgrade():
    with op.batch_alter_table('funding_programmes', schema=None) as batch_op:
        batch_op.drop_column('funded')
