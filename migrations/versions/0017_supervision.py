"""Supervised sessions (issue 13): a site may require that a plant supervisor watches every session live; the grace
before a session nobody supervises any more is cut; and whether observers may watch without the vendor being told.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 13:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('supervision_required', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('supervision_grace_seconds', sa.Integer(), nullable=False, server_default='60'))
        batch.add_column(sa.Column('silent_observers', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.drop_column('silent_observers')
        batch.drop_column('supervision_grace_seconds')
        batch.drop_column('supervision_required')
