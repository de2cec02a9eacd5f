"""Every column that holds sealed values. Re-encryption walks this list; a test walks the
catalog and fails if a bytea column is neither here nor declared as not sealed."""

from __future__ import annotations

from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.signing import PRIVATE_KEY
from tenantguard.data.idempotency import RESPONSE_BODY
from tenantguard.data.secrets import SECRET_VALUE
from tenantguard.data.webhook_endpoints import DELIVERY_BODY, ENDPOINT_SECRET
from tenantguard.data.webhook_sources import RECEIPT_BODY
from tenantguard.identity.oidc import OIDC_CLIENT_SECRET
from tenantguard.identity.totp import TOTP_SEED
from tenantguard.pii.sentinel import TOKEN_KEY, VAULT_VALUE

ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    SECRET_VALUE,
    PRIVATE_KEY,
    TOTP_SEED,
    OIDC_CLIENT_SECRET,
    TOKEN_KEY,
    VAULT_VALUE,
    RECEIPT_BODY,
    ENDPOINT_SECRET,
    DELIVERY_BODY,
    RESPONSE_BODY,
)

# bytea columns that hold no sealed value, and why.
NOT_SEALED: dict[str, str] = {
    "api_keys.key_hash": "a SHA-256 of the key: the key itself is never stored",
    "audit_events.event_hash": "a public hash of the event",
    "audit_events.chain_hash": "a public hash of the chain",
    "data_keys.wrapped_key": "wrapped by the KEK, not by a data key",
    "signing_keys.public_key": "a public key",
    "refresh_tokens.token_hash": "a SHA-256 of the token: the token itself is never stored",
    "magic_links.token_hash": "a SHA-256 of the link's token: the token itself is never stored",
    "recovery_codes.code_hash": "a SHA-256 of the code: the code itself is never stored",
    "oidc_logins.state_hash": "a SHA-256 of the OIDC state: the state itself is never stored",
    "audit_checkpoints.root_hash": "a public Merkle root, signed in the checkpoint's note",
    "oidc_logins.binding_hash": "a SHA-256 of the login's binding value, never stored itself",
    "saml_logins.binding_hash": "a SHA-256 of the login's binding value, never stored itself",
    "pii_vault.value_hash": "a keyed hash of a normalised value: finds its token again",
    "idempotency_keys.fingerprint": "a SHA-256 of a request, to tell a repeat from another",
    "saml_logins.relay_hash": "a SHA-256 of the RelayState: the state itself is never stored",
}
