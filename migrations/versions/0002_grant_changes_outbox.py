"""The grant-changes outbox: revocations, lockdowns and disabled identities relayed to every gateway.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 02:39:44.884304
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('grant_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('grant_id', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['grant_id'], ['grants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('grant_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grant_changes_created_at'), ['created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('grant_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grant_changes_created_at'))

    op.drop_table('grant_changes')
