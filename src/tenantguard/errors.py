"""The error tree of tenantguard.

Every failure a caller can see is a `TenantGuardError`. Each subclass carries, as class
attributes, what the gateway needs to render it as an RFC 9457 problem document: a stable
`type` URI, a `title`, an HTTP `status` and a short machine `code`. The gateway has exactly one
handler that renders any of them; nothing else builds problem documents.

`detail` is always safe text chosen by us. It never carries an exception message, SQL, a
constraint name or input that failed validation. The specific reason of an authentication
failure goes to the audit (`reason`), never outward: all of them render the same 401.

    TenantGuardError
    ├── InvalidCredentials          401  bad, expired, revoked or malformed credential
    ├── StepUpRequired              401  a sensitive action needs a fresh second factor
    ├── CapabilityDenied            403  the credential lacks the capability the action needs
    │   └── ToolCallDenied              the policy gate refused a tool call (gateway.routes.tools)
    ├── EgressDenied                403  the egress guard refused an outbound call (egress.check)
    ├── OperatorAccessDenied        403  the tenant has not opted in to operator access
    ├── SignedUrlInvalid,           403  a download link that is not this artifact's, or is
    │   SignedUrlExpired                 past its expiry (artifacts.service)
    ├── NotFound                    404  absent, or belongs to another tenant: the same answer
    ├── MethodNotAllowed            405
    ├── Conflict                    409  state conflict (version mismatch, duplicate key, ...)
    │   ├── ModelProviderMissing        the tenant has no provider for the model (no shared pool)
    │   ├── RunStopped                  the run is stopped, its budget exhausted (data.runs)
    │   ├── PurgeIncomplete             a purge's check found something left (tenantguard.purge)
    │   ├── IdempotencyInProgress,      a request under the key still runs, or never finished
    │   │   IdempotencyInterrupted          (tenantguard.idempotency)
    │   └── AuditVerificationFailed     audit evidence (a proof, a checkpoint) does not verify
    ├── RequestInvalid              422  the request does not match the schema
    │   ├── UnknownPiiClass, PolicyInvalid      (pii.detectors, pii.policy)
    │   ├── GrantInvalid                        (tools.capabilities)
    │   ├── IdempotencyKeyInvalid, IdempotencyKeyReused   (tenantguard.idempotency)
    │   ├── ArtifactTooLarge                    (artifacts.service)
    │   ├── RetentionPolicyInvalid              (tenantguard.retention)
    │   └── QuotaPolicyInvalid                  (quotas.core)
    ├── RateLimited                 429  a rate limit refused (Retry-After says when to retry)
    │   ├── QuotaExceeded               a day's or month's quota is used up
    │   └── BudgetExhausted             a run's budget is used up: the run is stopped
    ├── InternalError               500  anything unexpected; details only in the logs
    ├── DecryptionFailed            500  any failure to open a ciphertext: one opaque error
    ├── ServiceUnavailable          503  a dependency cannot be reached: fail closed
    │   ├── DatabaseUnavailable
    │   ├── QuotaStoreUnavailable   quotas cannot be counted, so nothing passes (quotas.stores)
    │   ├── AuditUnavailable        the audit write failed, so the action failed
    │   ├── ArtifactStoreUnavailable  the artifact store refused or cannot be reached
    │   └── KeyProviderUnavailable  the KEK (key file, HSM) cannot be used: nothing is written
    └── ConfigurationError          500  refuses to start: bad settings, doctor findings
        ├── DoctorFailed
        ├── MigrationsPending
        └── ToolForbidden, ToolInvalid  a tool the mode forbids, a bad declaration (tools.registry)
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

PROBLEM_TYPE_BASE = "https://tenantguard.dev/problems/"


class TenantGuardError(Exception):
    """Base of every tenantguard error; renders as one problem document."""

    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500
    default_detail: ClassVar[str] = "The request could not be completed."

    def __init__(self, detail: str | None = None) -> None:
        # `detail` is shown to the caller: pass only text written for that purpose.
        self.detail = detail if detail is not None else self.default_detail
        super().__init__(self.detail)

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the problem document carries (`Retry-After` of a rate limit)."""
        return {}

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_TYPE_BASE + cls.code.replace("_", "-")


class InvalidCredentials(TenantGuardError):
    code = "invalid_credentials"
    title = "Invalid credentials"
    status = 401
    default_detail = "The credentials are missing or not valid."

    def __init__(
        self, reason: str, *, tenant_id: UUID | None = None, credential_id: str = ""
    ) -> None:
        # The reason and the credential it concerns are for the audit only; the caller always
        # sees the default detail.
        super().__init__()
        self.reason = reason
        self.tenant_id = tenant_id
        self.credential_id = credential_id


class StepUpRequired(TenantGuardError):
    code = "step_up_required"
    title = "Step-up required"
    status = 401
    default_detail = (
        "This action needs a second factor from the last 5 minutes:"
        " POST /api/auth/step-up with a TOTP code."
    )


class CapabilityDenied(TenantGuardError):
    code = "capability_denied"
    title = "Capability denied"
    status = 403
    default_detail = "The credential does not grant the capability this action needs."

    def __init__(self, capability: str, detail: str | None = None) -> None:
        super().__init__(detail)
        self.capability = capability


class OperatorAccessDenied(TenantGuardError):
    code = "operator_access_not_granted"
    title = "Operator access not granted"
    status = 403
    default_detail = (
        "This tenant has not opted in to operator access; nothing of its data was read or"
        " changed. Its administrators can turn operator access on, and see every operator read."
    )


class NotFound(TenantGuardError):
    code = "not_found"
    title = "Not found"
    status = 404
    default_detail = "The resource does not exist."


class MethodNotAllowed(TenantGuardError):
    code = "method_not_allowed"
    title = "Method not allowed"
    status = 405
    default_detail = "The method is not allowed on this resource."


class Conflict(TenantGuardError):
    code = "conflict"
    title = "Conflict"
    status = 409
    default_detail = "The request conflicts with the current state of the resource."


class ModelProviderMissing(Conflict):
    code = "model_provider_missing"
    title = "No model provider"
    default_detail = (
        "This tenant has no model provider for that model. Configure one with"
        " PUT /api/model-providers/{name}; there is no shared fallback."
    )


class AuditVerificationFailed(Conflict):
    code = "audit_verification_failed"
    title = "Audit verification failed"
    default_detail = "The audit evidence does not verify."


class RequestInvalid(TenantGuardError):
    code = "request_invalid"
    title = "Request invalid"
    status = 422
    default_detail = "The request does not match the expected schema."


class RateLimited(TenantGuardError):
    """A limit refused: `retry_after` is how many seconds until it would pass (None: not by
    waiting), sent as `Retry-After`."""

    code = "rate_limited"
    title = "Too many requests"
    status = 429
    default_detail = "Too many requests; retry later."

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class QuotaExceeded(RateLimited):
    code = "quota_exceeded"
    title = "Quota exceeded"
    default_detail = "A quota of this period is used up; it renews when the period ends."


class BudgetExhausted(RateLimited):
    code = "budget_exhausted"
    title = "Budget exhausted"
    default_detail = "The run's budget is used up: the run is stopped."


class InternalError(TenantGuardError):
    pass


class DecryptionFailed(TenantGuardError):
    """A ciphertext did not open. Deliberately says nothing more: wrong key, wrong tenant,
    wrong record, tampered bytes and destroyed keys are indistinguishable (no oracle)."""

    code = "decryption_failed"
    title = "Decryption failed"
    default_detail = "Stored data could not be decrypted."


class ServiceUnavailable(TenantGuardError):
    code = "service_unavailable"
    title = "Service unavailable"
    status = 503
    default_detail = "A dependency is unavailable; the request was refused."


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    title = "Database unavailable"


class AuditUnavailable(ServiceUnavailable):
    code = "audit_unavailable"
    title = "Audit unavailable"
    default_detail = "The audit event could not be recorded, so the action was not performed."


class KeyProviderUnavailable(ServiceUnavailable):
    code = "key_provider_unavailable"
    title = "Key provider unavailable"
    default_detail = "The key provider cannot be used; nothing was written."


class ConfigurationError(TenantGuardError):
    code = "configuration_error"
    title = "Configuration error"
    default_detail = "tenantguard is not configured safely; see the logs."


class DoctorFailed(ConfigurationError):
    code = "doctor_failed"
    title = "Safety checks failed"
    default_detail = "The database fails tenantguard's safety checks; run `tenantguard doctor`."


class MigrationsPending(ConfigurationError):
    code = "migrations_pending"
    title = "Migrations pending"
    default_detail = "The database schema is behind; run `tenantguard db upgrade`."
