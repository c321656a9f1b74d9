"""Supervision per asset (issue 13): an asset's own policy (required, optional, or its site's), a site's switch that
supervises its high-criticality assets (off for the sites that exist now: an upgrade must not start holding their
sessions; new sites get it on), and a notification about a session's start carrying the link to watch it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 14:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

BEFORE = ("(CASE WHEN request_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN identity_id IS NULL THEN 0 ELSE 1 END)"
          " + (CASE WHEN run_id IS NULL THEN 0 ELSE 1 END) = 1")
ONE_SUBJECT = ("(CASE WHEN request_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN identity_id IS NULL THEN 0 ELSE 1 END)"
               " + (CASE WHEN run_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN session_id IS NULL THEN 0 ELSE 1 END)"
               " = 1")


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        # The server default is for the rows that exist now; create_site sets it on for every new site.
        batch.add_column(sa.Column('supervise_high_criticality', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table('assets') as batch:
        batch.add_column(sa.Column('supervision_required', sa.Boolean(), nullable=True))
    op.create_index('ix_sessions_started_at', 'sessions', ['started_at'])
    with op.batch_alter_table('notifications') as batch:
        batch.add_column(sa.Column('session_id', sa.String(length=16), nullable=True))
        batch.create_foreign_key('fk_notifications_session_id', 'sessions', ['session_id'], ['id'])
        batch.drop_constraint('ck_notifications_subject', type_='check')
        batch.create_check_constraint('ck_notifications_subject', ONE_SUBJECT)
        batch.create_unique_constraint('uq_notifications_session_channel_target', ['session_id', 'channel', 'target'])


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE session_id IS NOT NULL")
    with op.batch_alter_table('notifications') as batch:
        batch.drop_constraint('uq_notifications_session_channel_target', type_='unique')
        batch.drop_constraint('ck_notifications_subject', type_='check')
        batch.create_check_constraint('ck_notifications_subject', BEFORE)
        batch.drop_constraint('fk_notifications_session_id', type_='foreignkey')
        batch.drop_column('session_id')
    op.drop_index('ix_sessions_started_at', table_name='sessions')
    with op.batch_alter_table('assets') as batch:
        batch.drop_column('supervision_required')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('supervise_high_criticality')
