"""initial schema

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_clients',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('agency', sa.String(length=100), nullable=True),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_clients')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_clients_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_api_clients_name'))
    )
    op.create_table('audit_chain_heads',
    sa.Column('chain', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('mac', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_audit_chain_heads'))
    )
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('chain', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('occurred_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('subject_ref', sa.String(length=64), nullable=True),
    sa.Column('mykad_masked', sa.String(length=12), nullable=True),
    sa.Column('target_id', sa.String(length=36), nullable=True),
    sa.Column('outcome', sa.String(length=40), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('mac', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('chain', 'seq', name='uq_audit_events_chain_seq')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_subject_ref'), ['subject_ref'], unique=False)

    op.create_table('certificate_authorities',
    sa.Column('name', sa.String(length=16), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('key_blob', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_certificate_authorities'))
    )
    op.create_table('outbox_messages',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('request_id', sa.String(length=36), nullable=True),
    sa.Column('recipient', sa.String(length=254), nullable=False),
    sa.Column('sealed_message', sa.LargeBinary(), nullable=True),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('not_after', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('lease_until', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages'))
    )
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_messages_request_id'), ['request_id'], unique=False)
        batch_op.create_index('ix_outbox_messages_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('mykad', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('phone', sa.String(length=16), nullable=True),
    sa.Column('agency', sa.String(length=100), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('consecutive_failed_checks', sa.Integer(), nullable=False),
    sa.Column('signing_held_until', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('mykad', name=op.f('uq_users_mykad'))
    )
    op.create_table('credentials',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('medium', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('key_algorithm', sa.String(length=16), nullable=True),
    sa.Column('key_blob', sa.LargeBinary(), nullable=True),
    sa.Column('certificate_pem', sa.Text(), nullable=True),
    sa.Column('certificate_serial', sa.String(length=40), nullable=True),
    sa.Column('token_serial', sa.String(length=64), nullable=True),
    sa.Column('not_before', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('not_after', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('pin_mac', sa.LargeBinary(length=32), nullable=True),
    sa.Column('pin_failures', sa.Integer(), nullable=False),
    sa.Column('locked_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(length=40), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_credentials_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credentials')),
    sa.UniqueConstraint('certificate_serial', name=op.f('uq_credentials_certificate_serial'))
    )
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_credentials_user_id'), ['user_id'], unique=False)

    op.create_table('signing_requests',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('signer_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('credential_id', sa.String(length=36), nullable=False),
    sa.Column('document_hash', sa.String(length=128), nullable=False),
    sa.Column('hash_algorithm', sa.String(length=8), nullable=False),
    sa.Column('document_name', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('destination', sa.String(length=254), nullable=False),
    sa.Column('signature_format', sa.String(length=8), nullable=False),
    sa.Column('otp_mac', sa.LargeBinary(length=32), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], name=op.f('fk_signing_requests_credential_id_credentials')),
    sa.ForeignKeyConstraint(['signer_id'], ['api_clients.id'], name=op.f('fk_signing_requests_signer_id_api_clients')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_signing_requests_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_requests'))
    )
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signing_requests_credential_id'), ['credential_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_signing_requests_signer_id'), ['signer_id'], unique=False)
        batch_op.create_index('ix_signing_requests_status_expires_at', ['status', 'expires_at'], unique=False)
        batch_op.create_index('uq_signing_requests_pending_hash', ['user_id', 'document_hash'], unique=True, postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))

    op.create_table('signatures',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('request_id', sa.String(length=36), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.Column('signature_format', sa.String(length=8), nullable=False),
    sa.Column('signature_algorithm', sa.String(length=40), nullable=False),
    sa.Column('certificate_serial', sa.String(length=40), nullable=False),
    sa.Column('signed_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['signing_requests.id'], name=op.f('fk_signatures_request_id_signing_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signatures')),
    sa.UniqueConstraint('request_id', name=op.f('uq_signatures_request_id'))
    )


def downgrade() -> None:
    op.drop_table('signatures')
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_signing_requests_pending_hash', postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
        batch_op.drop_index('ix_signing_requests_status_expires_at')
        batch_op.drop_index(batch_op.f('ix_signing_requests_signer_id'))
        batch_op.drop_index(batch_op.f('ix_signing_requests_credential_id'))

    op.drop_table('signing_requests')
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credentials_user_id'))

    op.drop_table('credentials')
    op.drop_table('users')
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_messages_status_next_attempt_at')
        batch_op.drop_index(batch_op.f('ix_outbox_messages_request_id'))

    op.drop_table('outbox_messages')
    op.drop_table('certificate_authorities')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_subject_ref'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')
    op.drop_table('audit_chain_heads')
    op.drop_table('api_clients')
