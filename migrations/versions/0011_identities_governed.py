"""Every identity governed (issue 11): a lifecycle status in place of the ``disabled`` flag, sponsors, last use,
credential age and attestation dates on identities; the sites' governance policy; join tokens and key-bound
workload instances for service and AI identities; access reviews; standing policies; and delegated grants.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sites') as batch:
        batch.add_column(sa.Column('attestation_days', sa.Integer(), nullable=False, server_default='90'))
        batch.add_column(sa.Column('attestation_overdue', sa.String(length=8), nullable=False,
                                   server_default='suspend'))
        batch.add_column(sa.Column('owner_grace_days', sa.Integer(), nullable=False, server_default='7'))
        batch.add_column(sa.Column('credential_max_age_days', sa.Integer(), nullable=False, server_default='365'))
        batch.add_column(sa.Column('workload_credential_seconds', sa.Integer(), nullable=False,
                                   server_default='3600'))
        batch.add_column(sa.Column('agent_writes', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_check_constraint('ck_sites_attestation_overdue', "attestation_overdue IN ('suspend', 'flag')")

    with op.batch_alter_table('identities') as batch:
        batch.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='active'))
        batch.add_column(sa.Column('status_reason', sa.Text(), nullable=True))
        batch.add_column(sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('status_changed_by', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('sponsor_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('credential_changed_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('attested_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('attestation_due_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('owner_lost_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key('fk_identities_sponsor_id', 'identities', ['sponsor_id'], ['id'])
    # The old flag becomes the lifecycle: a disabled account is a suspended one; its credential dates from its
    # creation (the best this database knows).
    op.execute("UPDATE identities SET status = 'suspended', status_reason = 'disabled before identity "
               "lifecycles existed' WHERE disabled")
    op.execute("UPDATE identities SET credential_changed_at = created_at WHERE kind = 'human'")
    with op.batch_alter_table('identities') as batch:
        batch.drop_column('disabled')
        batch.create_check_constraint('ck_identities_status',
                                      "status IN ('active', 'suspended', 'retired', 'expired')")

    op.create_table(
        'workload_instances',
        sa.Column('id', sa.String(length=16), nullable=False),
        sa.Column('identity_id', sa.Integer(), nullable=False),
        sa.Column('public_key', sa.Text(), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('renewals', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_renewed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('locked_reason', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['identity_id'], ['identities.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('fingerprint'),
        sa.CheckConstraint("status IN ('active', 'locked')", name='ck_workload_instances_status'),
    )
    op.create_index('ix_workload_instances_identity_id', 'workload_instances', ['identity_id'])
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('instance_id', sa.String(length=16), nullable=True))
        batch.create_foreign_key('fk_api_tokens_instance_id', 'workload_instances', ['instance_id'], ['id'])

    op.create_table(
        'join_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('identity_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['identity_id'], ['identities.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_table(
        'attestations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('identity_id', sa.Integer(), nullable=False),
        sa.Column('reviewer_id', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=8), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['identity_id'], ['identities.id']),
        sa.ForeignKeyConstraint(['reviewer_id'], ['identities.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.CheckConstraint("outcome IN ('keep', 'revoke')", name='ck_attestations_outcome'),
    )
    op.create_index('ix_attestations_identity_id', 'attestations', ['identity_id'])
    op.create_table(
        'standing_policies',
        sa.Column('id', sa.String(length=16), nullable=False),
        sa.Column('identity_id', sa.Integer(), nullable=False),
        sa.Column('asset_id', sa.Integer(), nullable=False),
        sa.Column('ssh', sa.Boolean(), nullable=False),
        sa.Column('ports', sa.JSON(), nullable=False),
        sa.Column('read_only', sa.Boolean(), nullable=False),
        sa.Column('windows', sa.JSON(), nullable=False),
        sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('approved_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['identity_id'], ['identities.id']),
        sa.ForeignKeyConstraint(['asset_id'], ['assets.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_standing_policies_identity_id', 'standing_policies', ['identity_id'])
    # Review reminders go through the notification outbox: a row is about a request or about an identity.
    with op.batch_alter_table('notifications') as batch:
        batch.alter_column('request_id', existing_type=sa.String(length=16), nullable=True)
        batch.add_column(sa.Column('identity_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('review_due_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key('fk_notifications_identity_id', 'identities', ['identity_id'], ['id'])
        batch.create_unique_constraint('uq_notifications_review_channel_target',
                                       ['identity_id', 'review_due_at', 'channel', 'target'])
        batch.create_check_constraint('ck_notifications_subject', '(request_id IS NULL) <> (identity_id IS NULL)')
    with op.batch_alter_table('grants') as batch:
        batch.add_column(sa.Column('parent_grant_id', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('allowed_commands', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('standing_policy_id', sa.String(length=16), nullable=True))
        batch.create_foreign_key('fk_grants_parent_grant_id', 'grants', ['parent_grant_id'], ['id'])
        batch.create_foreign_key('fk_grants_standing_policy_id', 'standing_policies', ['standing_policy_id'],
                                 ['id'])
        batch.create_index('ix_grants_parent_grant_id', ['parent_grant_id'])


def downgrade() -> None:
    with op.batch_alter_table('grants') as batch:
        batch.drop_index('ix_grants_parent_grant_id')
        batch.drop_constraint('fk_grants_standing_policy_id', type_='foreignkey')
        batch.drop_constraint('fk_grants_parent_grant_id', type_='foreignkey')
        batch.drop_column('standing_policy_id')
        batch.drop_column('allowed_commands')
        batch.drop_column('parent_grant_id')
    op.execute("DELETE FROM notifications WHERE request_id IS NULL")
    with op.batch_alter_table('notifications') as batch:
        batch.drop_constraint('ck_notifications_subject', type_='check')
        batch.drop_constraint('uq_notifications_review_channel_target', type_='unique')
        batch.drop_constraint('fk_notifications_identity_id', type_='foreignkey')
        batch.drop_column('review_due_at')
        batch.drop_column('identity_id')
        batch.alter_column('request_id', existing_type=sa.String(length=16), nullable=False)
    op.drop_index('ix_standing_policies_identity_id', table_name='standing_policies')
    op.drop_table('standing_policies')
    op.drop_index('ix_attestations_identity_id', table_name='attestations')
    op.drop_table('attestations')
    op.drop_table('join_tokens')
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_constraint('fk_api_tokens_instance_id', type_='foreignkey')
        batch.drop_column('instance_id')
    op.drop_index('ix_workload_instances_identity_id', table_name='workload_instances')
    op.drop_table('workload_instances')
    with op.batch_alter_table('identities') as batch:
        batch.add_column(sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE identities SET disabled = (status <> 'active')")
    with op.batch_alter_table('identities') as batch:
        batch.drop_constraint('ck_identities_status', type_='check')
        batch.drop_constraint('fk_identities_sponsor_id', type_='foreignkey')
        for column in ('owner_lost_at', 'attestation_due_at', 'attested_at', 'credential_changed_at',
                       'last_used_at', 'sponsor_id', 'status_changed_by', 'status_changed_at', 'status_reason',
                       'status'):
            batch.drop_column(column)
    with op.batch_alter_table('sites') as batch:
        batch.drop_constraint('ck_sites_attestation_overdue', type_='check')
        for column in ('agent_writes', 'workload_credential_seconds', 'credential_max_age_days',
                       'owner_grace_days', 'attestation_overdue', 'attestation_days'):
            batch.drop_column(column)
