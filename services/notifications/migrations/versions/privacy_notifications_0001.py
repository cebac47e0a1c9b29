"""data protection: each notice knows its enrolment (to find an erased participant's mails)

Revision ID: privacy_notifications_0001
Revises: 0003
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = 'privacy_notifications_0001'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enrolment_id', sa.Uuid(), nullable=True))
    op.create_index('ix_notices_enrolment_id', 'notices', ['enrolment_id'])
    op.create_index('ix_notices_sent_at', 'notices', ['sent_at'],
                    postgresql_where=sa.text("status = 'sent'"),
                    sqlite_where=sa.text("status = 'sent'"))


def downgrade():
    op.drop_index('ix_notices_sent_at', table_name='notices')
    op.drop_index('ix_notices_enrolment_id', table_name='notices')
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.drop_column('enrolment_id')
