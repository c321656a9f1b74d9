"""Hardening (issue 9) and cuts that stop what the vendor started (issue 15): one-time enrolment codes,
sign-in throttles per source and account, a site's cap on what a non-interactive exec may carry from the
client on a download-only site, a site's grace between TERM and KILL on a cut, and an asset's list of client
environment variables that may reach it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('identities') as batch:
        # SHA-256 of the one-time enrolment code (issued with the account and at a TOTP reset; single use).
        batch.add_column(sa.Column('enrolment_code_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('enrolment_code_expires_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'sign_in_throttles',
        sa.Column('id', sa.Integer(), nullable=False),
        # "source" (one address), "account_source" (one account from one address) or "account" (all sources).
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('window_started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('blocked_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('scope', 'key'),
    )
    op.create_index('ix_sign_in_throttles_updated_at', 'sign_in_throttles', ['updated_at'])
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('exec_upload_limit', sa.Integer(), nullable=False, server_default='65536'))
        batch.add_column(sa.Column('cut_grace_ms', sa.Integer(), nullable=False, server_default='2000'))
    with op.batch_alter_table('assets') as batch:
        batch.add_column(sa.Column('passed_env', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('assets') as batch:
        batch.drop_column('passed_env')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('cut_grace_ms')
        batch.drop_column('exec_upload_limit')
    op.drop_index('ix_sign_in_throttles_updated_at', table_name='sign_in_throttles')
    op.drop_table('sign_in_throttles')
    with op.batch_alter_table('identities') as batch:
        batch.drop_column('enrolment_code_expires_at')
        batch.drop_column('enrolment_code_hash')
