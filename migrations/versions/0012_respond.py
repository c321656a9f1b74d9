"""Respond (issue 12): edited playbook versions, drill sites, and playbook messages through the notification
outbox (a row is about exactly one of a request, an identity's review, or a playbook run).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

ONE_SUBJECT = ("(CASE WHEN request_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN identity_id IS NULL THEN 0 ELSE 1 END)"
               " + (CASE WHEN run_id IS NULL THEN 0 ELSE 1 END) = 1")


def upgrade() -> None:
    op.create_table(
        'playbook_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('steps', sa.JSON(), nullable=False),
        sa.Column('edited_by', sa.String(length=64), nullable=False),
        sa.Column('edited_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name', 'version'),
    )
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('drill_site', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('notifications') as batch:
        batch.add_column(sa.Column('run_id', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('message_subject', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('message_text', sa.Text(), nullable=True))
        batch.drop_constraint('ck_notifications_subject', type_='check')
        batch.create_check_constraint('ck_notifications_subject', ONE_SUBJECT)
        batch.create_unique_constraint('uq_notifications_run_channel_target', ['run_id', 'channel', 'target'])


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE run_id IS NOT NULL")
    with op.batch_alter_table('notifications') as batch:
        batch.drop_constraint('uq_notifications_run_channel_target', type_='unique')
        batch.drop_constraint('ck_notifications_subject', type_='check')
        batch.create_check_constraint('ck_notifications_subject', '(request_id IS NULL) <> (identity_id IS NULL)')
        batch.drop_column('message_text')
        batch.drop_column('message_subject')
        batch.drop_column('run_id')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('drill_site')
    op.drop_table('playbook_versions')
