"""the programme office's pages: its staff, their single-use sign-in links and sessions

Revision ID: 0005_office_access
Revises: 0004_portal_access
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0005_office_access'
down_revision = '0004_portal_access'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'office_staff',
        sa.Column('email', sa.String(254), primary_key=True),
        sa.Column('name', sa.String(200), nullable=False),
        sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    )
    for table in ('office_sign_in_links', 'office_sessions'):
        key = 'token_hash' if table == 'office_sign_in_links' else 'id_hash'
        ended = 'used_at' if table == 'office_sign_in_links' else 'ended_at'
        op.create_table(
            table,
            sa.Column(key, sa.String(64), primary_key=True),
            sa.Column('email', sa.String(254), sa.ForeignKey('office_staff.email'),
                      nullable=False),
            sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column(ended, sa.DateTime(timezone=True), nullable=True),
        )
        op.create_index(f'ix_{table}_email', table, ['email'])


def downgrade():
    op.drop_table('office_sessions')
    op.drop_table('office_sign_in_links')
    op.drop_table('office_staff')
