"""an enrolment's version (the sequence of its events) and the funding and certificate versions it holds

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('funding_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('certificate_version', sa.Integer(), nullable=True))
    with op.batch_alter_table('municipality_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade():
    with op.batch_alter_table('municipality_accounts', schema=None) as batch_op:
        batch_op.drop_column('version')
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_column('certificate_version')
        batch_op.drop_column('funding_version')
        batch_op.drop_column('version')
