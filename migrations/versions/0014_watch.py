"""Watch (issue 12): behaviour baselines per identity and site, flags with their signals, the watcher's cursor
over the audit trail, and each site's learning period and optional automatic response.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('learning_days', sa.Integer(), nullable=False, server_default='14'))
        batch.add_column(sa.Column('auto_response', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('auto_response_severity', sa.String(length=8), nullable=False,
                                   server_default='high'))
    op.create_table(
        'baselines',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('identity_id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=True),
        sa.Column('profile', sa.JSON(), nullable=False),
        sa.Column('observations', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['identity_id'], ['identities.id']),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('identity_id', 'site_id'),
    )
    op.create_table(
        'flags',
        sa.Column('id', sa.String(length=16), nullable=False),
        sa.Column('identity_id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=True),
        sa.Column('session_id', sa.String(length=16), nullable=True),
        sa.Column('severity', sa.String(length=8), nullable=False),
        sa.Column('signals', sa.JSON(), nullable=False),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.Column('learning', sa.Boolean(), nullable=False),
        sa.Column('observations', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decided_by', sa.String(length=64), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['identity_id'], ['identities.id']),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.CheckConstraint("severity IN ('low', 'medium', 'high')", name='ck_flags_severity'),
        sa.CheckConstraint("status IN ('open', 'benign', 'confirmed')", name='ck_flags_status'),
    )
    op.create_index('ix_flags_identity_id', 'flags', ['identity_id'])
    op.create_index('ix_flags_session_id', 'flags', ['session_id'])
    op.create_index('ix_flags_created_at', 'flags', ['created_at'])
    op.create_table(
        'watch_cursors',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('last_seq', sa.BigInteger(), nullable=False),
        sa.Column('holder', sa.String(length=64), nullable=True),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('watch_cursors')
    op.drop_index('ix_flags_created_at', table_name='flags')
    op.drop_index('ix_flags_session_id', table_name='flags')
    op.drop_index('ix_flags_identity_id', table_name='flags')
    op.drop_table('flags')
    op.drop_table('baselines')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('auto_response_severity')
        batch.drop_column('auto_response')
        batch.drop_column('learning_days')
