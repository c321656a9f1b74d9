"""Grant extensions: a grantee's ask to move an active grant's end, and its approvals.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 04:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'grant_extensions',
        sa.Column('id', sa.String(length=16), nullable=False),
        sa.Column('grant_id', sa.String(length=16), nullable=False),
        sa.Column('requester_id', sa.Integer(), nullable=False),
        sa.Column('duration_seconds', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('approvals_required', sa.Integer(), nullable=False),
        sa.Column('approvals', sa.JSON(), nullable=False),
        sa.Column('denied_by', sa.String(length=64), nullable=True),
        sa.Column('denial_comment', sa.Text(), nullable=True),
        sa.Column('previous_ends_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('new_ends_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['grant_id'], ['grants.id']),
        sa.ForeignKeyConstraint(['requester_id'], ['identities.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_grant_extensions_grant_id', 'grant_extensions', ['grant_id'])


def downgrade() -> None:
    op.drop_index('ix_grant_extensions_grant_id', table_name='grant_extensions')
    op.drop_table('grant_extensions')
