"""the municipality portal: invited colleagues, single-use sign-in links, sessions

Revision ID: 0004_portal_access
Revises: 0004_body_coordinates
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_portal_access'
down_revision = '0004_body_coordinates'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'portal_colleagues',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('ags', sa.String(8), sa.ForeignKey('bodies.ags'), nullable=False),
        sa.Column('name', sa.String(200), nullable=False),
        sa.Column('email', sa.String(254), nullable=False),
        sa.Column('invited_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_portal_colleagues_ags', 'portal_colleagues', ['ags'])
    op.create_index('ix_portal_colleagues_email', 'portal_colleagues', ['email'])
    op.create_index('uq_active_portal_colleague', 'portal_colleagues', ['ags', 'email'],
                    unique=True, postgresql_where=sa.text('removed_at IS NULL'),
                    sqlite_where=sa.text('removed_at IS NULL'))
    op.create_table(
        'portal_sign_in_links',
        sa.Column('token_hash', sa.String(64), primary_key=True),
        sa.Column('ags', sa.String(8), sa.ForeignKey('bodies.ags'), nullable=False),
        sa.Column('email', sa.String(254), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_portal_sign_in_links_email', 'portal_sign_in_links', ['email'])
    op.create_table(
        'portal_sessions',
        sa.Column('id_hash', sa.String(64), primary_key=True),
        sa.Column('ags', sa.String(8), sa.ForeignKey('bodies.ags'), nullable=False),
        sa.Column('email', sa.String(254), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_portal_sessions_ags_email', 'portal_sessions', ['ags', 'email'])


def downgrade():
    op.drop_table('portal_sessions')
    op.drop_table('portal_sign_in_links')
    op.drop_table('portal_colleagues')
