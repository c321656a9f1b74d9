"""Site policy for recordings, transfers and maintenance windows; session recordings; approver e-mail and
TOTP enrolment state; the SIEM forwarding cursor.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('record_input', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column('transfers', sa.String(length=16), nullable=False, server_default='both'))
        batch.add_column(sa.Column('maintenance_windows', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('identities') as batch:
        batch.add_column(sa.Column('email', sa.String(length=254), nullable=True))
        # NULL: the TOTP secret was (re)issued and has not been confirmed with a code yet. Rows that exist
        # before this revision were enrolled the old way (secret handed over by the admin): confirmed.
        batch.add_column(sa.Column('totp_confirmed_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE identities SET totp_confirmed_at = created_at WHERE totp_secret_ciphertext IS NOT NULL")
    with op.batch_alter_table('sessions') as batch:
        batch.add_column(sa.Column('recording_name', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('recording_sha256', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('recording_bytes', sa.BigInteger(), nullable=True))
    op.create_table(
        'siem_cursors',
        sa.Column('destination', sa.String(length=255), nullable=False),
        sa.Column('last_seq', sa.BigInteger(), nullable=False),
        sa.Column('holder', sa.String(length=64), nullable=True),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('destination'),
    )


def downgrade() -> None:
    op.drop_table('siem_cursors')
    with op.batch_alter_table('sessions') as batch:
        batch.drop_column('recording_bytes')
        batch.drop_column('recording_sha256')
        batch.drop_column('recording_name')
    with op.batch_alter_table('identities') as batch:
        batch.drop_column('totp_confirmed_at')
        batch.drop_column('email')
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('maintenance_windows')
        batch.drop_column('transfers')
        batch.drop_column('record_input')
