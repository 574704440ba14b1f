"""lifecycle: roaming applications, e-mailed one-time tokens, job runs, renewal and expiry notices

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('job_runs',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('next_due_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_started_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_finished_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_outcome', sa.String(length=200), nullable=True),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_runs'))
    )
    op.create_table('one_time_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('purpose', sa.String(length=24), nullable=False),
    sa.Column('subject_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('token_mac', sa.LargeBinary(length=32), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('is_on_request', sa.Boolean(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('used_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('superseded_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_one_time_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_one_time_tokens'))
    )
    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_one_time_tokens_purpose_subject_id', ['purpose', 'subject_id'], unique=False)
        batch_op.create_index('ix_one_time_tokens_user_id_created_at', ['user_id', 'created_at'], unique=False)

    op.create_table('roaming_applications',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('opened_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('email_verified_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('approved_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('credential_id', sa.String(length=36), nullable=True),
    sa.ForeignKeyConstraint(['credential_id'], ['credentials.id'], name=op.f('fk_roaming_applications_credential_id_credentials')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_roaming_applications_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roaming_applications'))
    )
    with op.batch_alter_table('roaming_applications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roaming_applications_user_id'), ['user_id'], unique=False)
        batch_op.create_index('uq_roaming_applications_open', ['user_id'], unique=True, postgresql_where=sa.text("status IN ('awaiting_email_verification', 'email_verified')"), sqlite_where=sa.text("status IN ('awaiting_email_verification', 'email_verified')"))

    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replaces_credential_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('expiry_notice_sent_at', app.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.create_index('uq_credentials_medium_token_serial', ['medium', 'token_serial'], unique=True)
        batch_op.create_foreign_key(batch_op.f('fk_credentials_replaces_credential_id_credentials'), 'credentials', ['replaces_credential_id'], ['id'])

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_changed_at', app.db.UtcDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('email_changed_at')

    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_credentials_replaces_credential_id_credentials'), type_='foreignkey')
        batch_op.drop_index('uq_credentials_medium_token_serial')
        batch_op.drop_column('expiry_notice_sent_at')
        batch_op.drop_column('replaces_credential_id')

    with op.batch_alter_table('roaming_applications', schema=None) as batch_op:
        batch_op.drop_index('uq_roaming_applications_open', postgresql_where=sa.text("status IN ('awaiting_email_verification', 'email_verified')"), sqlite_where=sa.text("status IN ('awaiting_email_verification', 'email_verified')"))
        batch_op.drop_index(batch_op.f('ix_roaming_applications_user_id'))

    op.drop_table('roaming_applications')
    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_one_time_tokens_user_id_created_at')
        batch_op.drop_index('ix_one_time_tokens_purpose_subject_id')

    op.drop_table('one_time_tokens')
    op.drop_table('job_runs')
