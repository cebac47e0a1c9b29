"""coaching programmes: milestones per programme, coaches, Navigators, milestones reached and reminded

Revision ID: 0006_coaching
Revises: 0005_office_access
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_coaching'
down_revision = '0005_office_access'
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        'coaching_programmes',
        sa.Column('programme_id', sa.Uuid(), sa.ForeignKey('programmes.id'), primary_key=True),
        sa.Column('milestones', sa.JSON(), nullable=False),
    )
    op.create_table(
        'coaches',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('programme_id', sa.Uuid(), sa.ForeignKey('programmes.id'), nullable=False),
        sa.Column('name', sa.String(200), nullable=False),
        sa.Column('email', sa.String(254), nullable=False),
        sa.Column('max_navigators', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(64), nullable=False, unique=True),
        sa.Column('created_at', WHEN, nullable=False),
    )
    op.create_index('ix_coaches_programme_id', 'coaches', ['programme_id'])
    op.create_table(
        'navigators',
        sa.Column('id', sa.Uuid(), primary_key=True),
        sa.Column('programme_id', sa.Uuid(), sa.ForeignKey('programmes.id'), nullable=False),
        sa.Column('ags', sa.String(8), sa.ForeignKey('bodies.ags'), nullable=False),
        sa.Column('given_name', sa.String(100), nullable=False),
        sa.Column('family_name', sa.String(100), nullable=False),
        sa.Column('email', sa.String(254), nullable=False),
        sa.Column('department', sa.String(200), nullable=True),
        sa.Column('named_at', WHEN, nullable=False),
        sa.Column('replaced_at', WHEN, nullable=True),
        sa.Column('replaces_id', sa.Uuid(), nullable=True),
        sa.Column('coach_id', sa.Uuid(), sa.ForeignKey('coaches.id'), nullable=True),
        sa.Column('coaching_started_on', sa.Date(), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False, server_default='0'),
    )
    op.create_index('ix_navigators_coach_id', 'navigators', ['coach_id'])
    op.create_index('uq_active_navigator', 'navigators', ['programme_id', 'ags'], unique=True,
                    postgresql_where=sa.text('replaced_at IS NULL'),
                    sqlite_where=sa.text('replaced_at IS NULL'))
    op.create_table(
        'milestone_records',
        sa.Column('navigator_id', sa.Uuid(), sa.ForeignKey('navigators.id'), primary_key=True),
        sa.Column('key', sa.String(40), primary_key=True),
        sa.Column('reached_on', sa.Date(), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('document_ref', sa.String(300), nullable=True),
        sa.Column('recorded_by', sa.Uuid(), sa.ForeignKey('coaches.id'), nullable=False),
        sa.Column('recorded_at', WHEN, nullable=False),
    )
    op.create_table(
        'milestones_overdue',
        sa.Column('navigator_id', sa.Uuid(), sa.ForeignKey('navigators.id'), primary_key=True),
        sa.Column('key', sa.String(40), primary_key=True),
        sa.Column('reported_at', WHEN, nullable=False),
    )


def downgrade():
    for table in ('milestones_overdue', 'milestone_records', 'navigators', 'coaches',
                  'coaching_programmes'):
        op.drop_table(table)
