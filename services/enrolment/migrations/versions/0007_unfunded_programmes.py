"""whether a programme funds anything (a coaching programme without a funding section does not)

Revision ID: 0007_unfunded_programmes
Revises: privacy_enrolment_0001
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_unfunded_programmes'
down_revision = 'privacy_enrolment_0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('programmes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('funded', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def downgrade():
    with op.batch_alter_table('programmes', schema=None) as batch_op:
        batch_op.drop_column('funded')
