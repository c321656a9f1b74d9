"""Recording retention and evidence holds (issue 12): a site's retention of session recordings (None: the
broker's default; 0: forever), when a recording was purged, and the holds that keep a recording as evidence.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('recording_retention_days', sa.Integer(), nullable=True))
    with op.batch_alter_table('sessions') as batch:
        batch.add_column(sa.Column('recording_purged_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'evidence_holds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('session_id', sa.String(length=16), nullable=False),
        sa.Column('run_id', sa.String(length=16), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('held_by', sa.String(length=64), nullable=False),
        sa.Column('held_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('released_by', sa.String(length=64), nullable=True),
        sa.Column('release_reason', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['session_id'], ['sessions.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_evidence_holds_session_id', 'evidence_holds', ['session_id'])


def downgrade() -> None:
    op.drop_index('ix_evidence_holds_session_id', table_name='evidence_holds')
    op.drop_table('evidence_holds')
    with op.batch_alter_table('sessions') as batch:
        batch.drop_column('recording_purged_at')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('recording_retention_days')
