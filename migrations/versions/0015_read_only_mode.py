"""A site's read-only mode (issue 12, a playbook step): while on, only read-only protocol access is requested,
approved or kept open there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 03:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('read_only_mode', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('read_only_mode')
