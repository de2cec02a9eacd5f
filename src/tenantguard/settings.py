"""Settings: read once from `TENANTGUARD_*`, then sliced into small frozen configs.

Only `create_app()` and the CLI construct `Settings`; every control receives the slice it needs
(`DatabaseConfig`, `GatewayConfig`, `LogConfig`), never the whole object and never the
environment. Secrets (database URLs carry passwords) are `SecretStr` until the adapter uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantguard.crypto.kek import KekConfig
from tenantguard.errors import ConfigurationError
from tenantguard.mail import Mailer, OutboxMailer, SmtpMailer

if TYPE_CHECKING:
    from tenantguard.artifacts.stores import ObjectStore
    from tenantguard.audit.publish import JetStreamPublisher

DeploymentMode = Literal["saas", "self_hosted"]
LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where the data lives. `app_url` None means: start the embedded server under `pg_dir`."""

    pg_dir: Path
    app_url: SecretStr | None
    owner_url: SecretStr | None
    pool_min: int
    pool_max: int

    @property
    def embedded(self) -> bool:
        return self.app_url is None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str
    port: int
    deployment_mode: DeploymentMode
    unsafe_loopback_sso: bool = False


@dataclass(frozen=True, slots=True)
class CheckpointConfig:
    """Audit checkpoints: origin (and note key name), interval, witness directory."""

    origin: str
    interval_seconds: float
    witness_dir: Path
    verify_seconds: float = 900.0


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """Who issues access tokens and for whom: their `iss` and `aud`."""

    issuer: str
    audience: str


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel
    json: bool


class Settings(BaseSettings):
    """Every setting of tenantguard, from `TENANTGUARD_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TENANTGUARD_", frozen=True, extra="forbid")

    deployment_mode: DeploymentMode = "saas"
    data_root: Path = Path(".tenantguard")
    # The service's own connection (role tenantguard_app). Unset: the embedded server.
    database_url: SecretStr | None = None
    # The migration connection (role tenantguard_owner); used only by `db upgrade`.
    database_owner_url: SecretStr | None = None
    database_pool_min: int = Field(default=1, ge=1, le=100)
    database_pool_max: int = Field(default=10, ge=1, le=200)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: LogLevel = "info"
    log_json: bool = True
    # Key-encryption keys: a key file under <data_root>/keys, or a PKCS#11 token (HSM).
    kek_provider: Literal["local", "pkcs11"] = "local"
    pkcs11_module: Path | None = None
    pkcs11_token: str | None = None
    pkcs11_pin: SecretStr | None = None
    # How long an unwrapped data key may stay in a process's memory (0: never cached).
    key_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    # Access tokens: who issues them and for whom (iss, aud).
    token_issuer: str = Field(default="tenantguard", min_length=1, max_length=200)
    token_audience: str = Field(default="tenantguard-api", min_length=1, max_length=200)
    # Where people reach the gateway (sign-in links point here).
    public_url: str = Field(default="http://127.0.0.1:8080", max_length=2048)
    # Mail: unset smtp_host means the outbox folder under the data root (`tenantguard outbox`).
    mail_from: str = Field(default="tenantguard@localhost", max_length=320)
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # Every magic-link request is answered after at least this long (hides mail latency).
    magic_link_floor_seconds: float = Field(default=0.5, ge=0, le=10)
    # Audit checkpoints: the origin prefix (also the signing key's note name), how often the
    # gateway signs one for each tenant whose log grew (0: only on demand), and the witness
    # directory each is also written to (unset: <data_root>/witness).
    audit_origin: str = Field(default="tenantguard", pattern=r"^[A-Za-z0-9._:/-]{1,200}$")
    audit_checkpoint_seconds: float = Field(default=300.0, ge=0, le=86400)
    # How often the gateway re-verifies every tenant's log against its checkpoints (0: never).
    audit_verify_seconds: float = Field(default=900.0, ge=0, le=86400)
    audit_witness_dir: Path | None = None
    # Also publish every checkpoint to NATS JetStream (unset: no publishing). The stream that
    # covers `<subject prefix>.>` is the deployment's to create; an unacknowledged publish
    # fails the checkpoint.
    audit_nats_url: str | None = None
    audit_nats_subject: str = Field(
        default="tenantguard.audit.checkpoints", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
    )
    # The JUnit XML of this build's test run, whose security suites evidence packs summarise.
    evidence_test_results: Path | None = None
    # How often the gateway sends the outbound webhooks that are due (0: never by itself).
    webhook_delivery_seconds: float = Field(default=2.0, ge=0, le=3600)
    # Each tenant's workspace (self_hosted filesystem tools): its files' bytes and its entries.
    workspace_max_bytes: int = Field(default=100 * 1_048_576, ge=1_048_576, le=2**40)
    workspace_max_entries: int = Field(default=10_000, ge=10, le=1_000_000)
    # Artifacts: where their sealed bytes are kept (local: under data_root; s3: a bucket of any
    # S3-compatible server, path-style, SigV4), the largest upload accepted, and the longest a
    # signed download URL may last (5 minutes unless asked otherwise).
    artifact_store: Literal["local", "s3"] = "local"
    artifact_max_bytes: int = Field(default=8 * 1_048_576, ge=1024, le=256 * 1_048_576)
    artifact_url_max_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)
    s3_endpoint: str | None = None  # https://s3.eu-central-1.amazonaws.com, http://10.0.0.5:9000
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = Field(default="", pattern=r"^([A-Za-z0-9._-]+/)*$")
    # A private S3 endpoint (MinIO on the operator's network) is reachable only through this
    # explicit egress grant (a CIDR, on the endpoint's port): the one egress guard applies.
    s3_network: str | None = None
    # How often the gateway runs the expiry job (retention policies; 0: never by itself).
    retention_seconds: float = Field(default=3600.0, ge=0, le=86_400)
    # How long an Idempotency-Key's answer is kept and replayed (hours; then the key is free).
    idempotency_retention_hours: float = Field(default=24.0, ge=1, le=24 * 30)
    # UNSAFE, for local test identity providers only: accept http:// and loopback hosts as
    # OIDC issuers and endpoints, SAML sign-on and ACS URLs. Off in any real deployment.
    unsafe_loopback_sso: bool = False
    # UNSAFE, for local test servers only: tools' outbound calls may reach loopback (the
    # egress guard grants 127.0.0.0/8 and ::1 on every port). Off in any real deployment.
    unsafe_loopback_egress: bool = False
    # Quotas: where the counters live (postgres: the database, the default; redis: shared by
    # many gateway replicas, at redis_url), and the platform's own limits, which hold for
    # every tenant on top of each tenant's own (a JSON policy, as PUT /api/admin/quotas takes).
    quota_store: Literal["postgres", "redis"] = "postgres"
    redis_url: SecretStr | None = None
    platform_limits: dict[str, Any] = Field(
        default_factory=lambda: {
            "limits": [
                {"metric": "requests", "scope": "credential", "per": "minute", "limit": 1200}
            ]
        }
    )

    # What models cost, for spend budgets: model -> {"input": USD, "output": USD} per million
    # tokens. A call of a model without a price is refused while a spend limit applies to it.
    model_prices: dict[str, dict[str, float]] = Field(default_factory=dict)

    def database(self) -> DatabaseConfig:
        return DatabaseConfig(
            pg_dir=self.data_root / "pg",
            app_url=self.database_url,
            owner_url=self.database_owner_url,
            pool_min=self.database_pool_min,
            pool_max=max(self.database_pool_min, self.database_pool_max),
        )

    def gateway(self) -> GatewayConfig:
        return GatewayConfig(
            host=self.host,
            port=self.port,
            deployment_mode=self.deployment_mode,
            unsafe_loopback_sso=self.unsafe_loopback_sso,
        )

    def kek(self) -> KekConfig:
        return KekConfig(
            provider=self.kek_provider,
            local_dir=self.data_root / "keys",
            pkcs11_module=self.pkcs11_module,
            pkcs11_token=self.pkcs11_token,
            pkcs11_pin=self.pkcs11_pin,
        )

    def tokens(self) -> TokenConfig:
        return TokenConfig(issuer=self.token_issuer, audience=self.token_audience)

    def mailer(self) -> Mailer:
        if self.smtp_host is None:
            return OutboxMailer(self.data_root / "outbox")
        return SmtpMailer(
            self.smtp_host,
            self.smtp_port,
            starttls=self.smtp_starttls,
            username=self.smtp_username,
            password=self.smtp_password,
        )

    def object_store(self) -> ObjectStore:
        """The store artifacts' sealed bytes go to; an incomplete S3 configuration stops the
        start."""
        from tenantguard.artifacts import stores  # noqa: PLC0415 (the gateway's only)
        from tenantguard.artifacts.sigv4 import Credentials  # noqa: PLC0415

        if self.artifact_store == "local":
            return stores.LocalStore(self.data_root)
        names = ("s3_endpoint", "s3_bucket", "s3_access_key_id", "s3_secret_access_key")
        missing = [f"TENANTGUARD_{n.upper()}" for n in names if getattr(self, n) is None]
        if missing:
            raise ConfigurationError(f"TENANTGUARD_ARTIFACT_STORE=s3 needs {', '.join(missing)}")
        assert self.s3_endpoint is not None  # noqa: S101
        assert self.s3_bucket is not None  # noqa: S101
        assert self.s3_access_key_id is not None  # noqa: S101
        assert self.s3_secret_access_key is not None  # noqa: S101
        return stores.S3Store(
            self.s3_endpoint,
            self.s3_bucket,
            Credentials(
                self.s3_access_key_id,
                self.s3_secret_access_key.get_secret_value(),
                self.s3_region,
            ),
            policy=stores.s3_policy(self.s3_endpoint, self.s3_network, self.artifact_max_bytes),
            prefix=self.s3_prefix,
        )

    def checkpoint_publisher(self) -> JetStreamPublisher | None:
        if self.audit_nats_url is None:
            return None
        from tenantguard.audit.publish import JetStreamPublisher  # noqa: PLC0415 (optional)

        return JetStreamPublisher(self.audit_nats_url, subject_prefix=self.audit_nats_subject)

    def checkpoints(self) -> CheckpointConfig:
        return CheckpointConfig(
            origin=self.audit_origin,
            interval_seconds=self.audit_checkpoint_seconds,
            witness_dir=self.audit_witness_dir or self.data_root / "witness",
            verify_seconds=self.audit_verify_seconds,
        )

    def logging(self) -> LogConfig:
        return LogConfig(level=self.log_level, json=self.log_json)
