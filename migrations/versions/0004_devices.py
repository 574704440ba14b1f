"""MyGPKI Mobile: devices, their OTP messages, signature nonces and registration rate windows

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('device_rate_windows',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('window_started_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_device_rate_windows'))
    )
    op.create_table('devices',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('os_version', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=True),
    sa.Column('phone_last4', sa.String(length=4), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('public_key_pem', sa.Text(), nullable=True),
    sa.Column('activation_code_mac', sa.LargeBinary(length=32), nullable=True),
    sa.Column('activation_attempts', sa.Integer(), nullable=False),
    sa.Column('activation_expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('activated_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('deactivated_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('deactivation_reason', sa.String(length=24), nullable=True),
    sa.Column('last_seen_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_devices_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices'))
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devices_user_id'), ['user_id'], unique=False)
        batch_op.create_index('uq_devices_active_user', ['user_id'], unique=True, postgresql_where=sa.text("status = 'active'"), sqlite_where=sa.text("status = 'active'"))

    op.create_table('device_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('request_id', sa.String(length=36), nullable=False),
    sa.Column('sealed_payload', sa.LargeBinary(), nullable=True),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_messages_device_id_devices')),
    sa.ForeignKeyConstraint(['request_id'], ['signing_requests.id'], name=op.f('fk_device_messages_request_id_signing_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_messages')),
    sa.UniqueConstraint('request_id', name=op.f('uq_device_messages_request_id'))
    )
    with op.batch_alter_table('device_messages', schema=None) as batch_op:
        batch_op.create_index('ix_device_messages_device_id_status', ['device_id', 'status'], unique=False)
        batch_op.create_index('ix_device_messages_status_expires_at', ['status', 'expires_at'], unique=False)

    op.create_table('device_nonces',
    sa.Column('device_id', sa.String(length=36), nullable=False),
    sa.Column('nonce', sa.String(length=128), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_nonces_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', 'nonce', name=op.f('pk_device_nonces'))
    )
    with op.batch_alter_table('device_nonces', schema=None) as batch_op:
        batch_op.create_index('ix_device_nonces_expires_at', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('device_nonces', schema=None) as batch_op:
        batch_op.drop_index('ix_device_nonces_expires_at')

    op.drop_table('device_nonces')
    with op.batch_alter_table('device_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_device_messages_status_expires_at')
        batch_op.drop_index('ix_device_messages_device_id_status')

    op.drop_table('device_messages')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('uq_devices_active_user', postgresql_where=sa.text("status = 'active'"), sqlite_where=sa.text("status = 'active'"))
        batch_op.drop_index(batch_op.f('ix_devices_user_id'))

    op.drop_table('devices')
    op.drop_table('device_rate_windows')
