"""Read-only grants: the gateway lets Modbus/TCP reads through and refuses writes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 03:33:36.712802
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('read_only', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('read_only', sa.Boolean(), nullable=False, server_default=sa.false()))



def downgrade() -> None:
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_column('read_only')

    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.drop_column('read_only')

