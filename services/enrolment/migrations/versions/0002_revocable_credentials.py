"""revocable provider tokens and municipality API keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_issued_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
    # A provider's first token was issued when the provider was created.
    op.execute("UPDATE providers SET token_issued_at = created_at")
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.alter_column('token_issued_at', existing_type=sa.DateTime(timezone=True),
                              nullable=False)

    with op.batch_alter_table('municipality_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('municipality_accounts', schema=None) as batch_op:
        batch_op.drop_column('revoked_at')

    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('token_issued_at')
