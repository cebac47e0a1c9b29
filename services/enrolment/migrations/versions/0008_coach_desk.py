"""coaches' pages: their single-use sign-in links and sessions, and uploaded milestone PDFs

Revision ID: 0008_coach_desk
Revises: 0007_unfunded_programmes
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_coach_desk'
down_revision = '0007_unfunded_programmes'
branch_labels = None
depends_on = None


def upgrade():
    for table, key, ended in (('coach_sign_in_links', 'token_hash', 'used_at'),
                              ('coach_sessions', 'id_hash', 'ended_at')):
        op.create_table(
            table,
            sa.Column(key, sa.String(64), primary_key=True),
            sa.Column('email', sa.String(254), nullable=False),
            sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
            sa.Column(ended, sa.DateTime(timezone=True), nullable=True),
        )
        op.create_index(f'ix_{table}_email', table, ['email'])
    op.create_table(
        'milestone_documents',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('navigator_id', sa.Uuid(), sa.ForeignKey('navigators.id'), nullable=False),
        sa.Column('key', sa.String(40), nullable=False),
        sa.Column('filename', sa.String(200), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        sa.Column('uploaded_by', sa.Uuid(), sa.ForeignKey('coaches.id'), nullable=False),
        sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_milestone_documents_navigator_id', 'milestone_documents',
                    ['navigator_id'])


def downgrade():
    op.drop_table('milestone_documents')
    op.drop_table('coach_sessions')
    op.drop_table('coach_sign_in_links')
