"""Recordings uploaded by separate gateways: a session whose recording is still on its gateway's disk.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sessions') as batch:
        # False for the sessions that exist now: their gateways kept the files where they wrote them.
        batch.add_column(sa.Column('recording_on_gateway', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('sessions') as batch:
        batch.drop_column('recording_on_gateway')
