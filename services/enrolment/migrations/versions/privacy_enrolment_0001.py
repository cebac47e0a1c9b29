"""data protection: retention per programme, erased enrolments, the erasure record

Revision ID: privacy_enrolment_0001
Revises: 0006_coaching
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = 'privacy_enrolment_0001'
down_revision = '0006_coaching'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('programmes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retention_days', sa.Integer(), nullable=False,
                                      server_default='730'))
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'erasures',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('email_key', sa.String(length=64), nullable=False),
        sa.Column('pseudonym', sa.String(length=40), nullable=False),
        sa.Column('cause', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('enrolment_ids', sa.JSON(), nullable=False),
        sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_erasures_email_key', 'erasures', ['email_key'])


def downgrade():
    op.drop_index('ix_erasures_email_key', table_name='erasures')
    op.drop_table('erasures')
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_column('erased_at')
    with op.batch_alter_table('programmes', schema=None) as batch_op:
        batch_op.drop_column('retention_days')
