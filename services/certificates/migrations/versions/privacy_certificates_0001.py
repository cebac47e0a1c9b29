"""data protection: markers of enrolments whose participant was erased, holder_erased_at

Revision ID: privacy_certificates_0001
Revises: 0002
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = 'privacy_certificates_0001'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'erased_enrolments',
        sa.Column('enrolment_id', sa.Uuid(), nullable=False),
        sa.Column('erasure_id', sa.Uuid(), nullable=False),
        sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('enrolment_id'))
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('holder_erased_at', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade():
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_column('holder_erased_at')
    op.drop_table('erased_enrolments')
