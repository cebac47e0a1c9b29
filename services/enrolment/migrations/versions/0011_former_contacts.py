"""a body's contact whom a newer one replaced: when, so that the retention run erases them

Revision ID: 0011_former_contacts
Revises: 0010_coach_erasure
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = '0011_former_contacts'
down_revision = '0010_coach_erasure'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'former_contacts',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('ags', sa.String(length=8), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('replaced_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['ags'], ['bodies.ags'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_former_contacts_email'), 'former_contacts', ['email'],
                    unique=False)


def downgrade():
    op.drop_index(op.f('ix_former_contacts_email'), table_name='former_contacts')
    op.drop_table('former_contacts')
