"""Purging a tenant: every row, file, object and data key of it removed, consistently, in
steps that can each run again, and checked afterwards by a count that must find nothing.

    1. record    the purge, in the platform realm (it outlives the tenant), audited there;
                 the tenant's API keys and sessions are revoked in the same step
    2. shred     every data key of the tenant destroyed: nothing it sealed opens again, so
                 whatever an interruption leaves behind is unreadable from here on
    3. objects   the tenant's artifacts in the store, and its directory under the data root
    4. rows      every row of every tenant table (`purge_tenant_rows`: only in the tenant's
                 own context, only once the purge is recorded and the keys destroyed; the
                 tenant's audit chain included: its head is kept in the tombstone), and the
                 kept answers of operators' requests about the tenant (platform realm)
    5. check     `tenant_row_counts` finds no row, the store no object, the disk no file;
                 then the tombstone: the record marked done with its report, and
                 `tenant.purged` audited in the platform chain

An interrupted purge is completed by running it again: each step does what is left of it.
A purge whose check finds anything stays `running` and raises `PurgeIncomplete`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
from psycopg.types.json import Jsonb

from tenantguard.artifacts.stores import ObjectStore, object_key
from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Database
from tenantguard.errors import Conflict, NotFound, RequestInvalid

_log = structlog.get_logger("tenantguard.purge")


class PurgeIncomplete(Conflict):
    code = "purge_incomplete"
    title = "Purge incomplete"
    default_detail = "Something of the tenant is still there; run the purge again."


@dataclass(frozen=True, slots=True)
class PurgeReport:
    tenant_id: UUID
    rows: dict[str, int] = field(default_factory=dict)  # deleted by this run, per table
    objects: int = 0  # artifacts' objects deleted by this run
    keys_destroyed: int = 0
    left: dict[str, int] = field(default_factory=dict)  # what the check found (must be empty)
    already_done: bool = False

    @property
    def verified(self) -> bool:
        return not self.left


def _operator_paths(tenant_id: UUID) -> str:
    """Operators' requests about the tenant, whose kept answers live in the platform realm."""
    return f"/api/operator/tenants/{tenant_id}/%"  # a UUID holds no LIKE wildcard


def tenant_directory(data_root: Path, tenant_id: UUID) -> Path:
    return data_root / "orgs" / str(tenant_id)


@dataclass
class Purger:
    db: Database
    keyring: Keyring
    store: ObjectStore
    data_root: Path
    clock: Clock

    def purge(self, actor: TenantContext, tenant_id: UUID) -> PurgeReport:
        """Purge `tenant_id` (or complete an interrupted purge of it), as `actor` (an operator
        or the CLI, in the platform realm)."""
        if tenant_id == PLATFORM_TENANT_ID:
            raise RequestInvalid("The platform realm is never purged.")
        if self._done(tenant_id):
            return PurgeReport(tenant_id, already_done=True)
        head = self._record(actor, tenant_id)
        ctx = TenantContext(tenant_id, actor.principal, frozenset(), actor.request_id)
        with self.db.tenant_transaction(tenant_id) as tx:
            destroyed = self.keyring.destroy_all(tx, ctx)
        objects = self._objects(tenant_id)
        with self.db.tenant_transaction(tenant_id) as tx:
            rows = {
                str(t): int(n)
                for t, n in tx.execute(
                    "SELECT table_name, deleted FROM tenantguard.purge_tenant_rows(%s)",
                    (tenant_id,),
                ).fetchall()
                if int(n)
            }
        with self.db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            kept = tx.execute(
                "DELETE FROM tenantguard.idempotency_keys WHERE tenant_id = %s AND path LIKE %s",
                (PLATFORM_TENANT_ID, _operator_paths(tenant_id)),
            ).rowcount
        if kept:
            rows["platform_idempotency_keys"] = kept
        left = self.check(tenant_id)
        report = PurgeReport(tenant_id, rows, objects, destroyed, left)
        if left:
            _log.error("purge.incomplete", tenant_id=str(tenant_id), left=left)
            raise PurgeIncomplete()
        self._tombstone(actor, tenant_id, report, head)
        return report

    def check(self, tenant_id: UUID) -> dict[str, int]:
        """What is left of the tenant: rows per table, `objects`, `files` (empty: nothing)."""
        with self.db.tenant_transaction(tenant_id) as tx:
            left = {
                str(t): int(n)
                for t, n in tx.execute(
                    "SELECT table_name, left_rows FROM tenantguard.tenant_row_counts(%s)",
                    (tenant_id,),
                ).fetchall()
            }
        with self.db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            kept = tx.execute(
                "SELECT count(*) FROM tenantguard.idempotency_keys WHERE tenant_id = %s"
                " AND path LIKE %s",
                (PLATFORM_TENANT_ID, _operator_paths(tenant_id)),
            ).fetchone()
        if kept is not None and int(kept[0]):
            left["platform_idempotency_keys"] = int(kept[0])
        objects = self.store.keys(object_key(tenant_id))
        if objects:
            left["objects"] = len(objects)
        directory = tenant_directory(self.data_root, tenant_id)
        if directory.exists() or directory.is_symlink():
            left["files"] = 1
        return left

    def _done(self, tenant_id: UUID) -> bool:
        with self.db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            row = tx.execute(
                "SELECT state FROM tenantguard.tenant_purges WHERE tenant_id = %s"
                " AND purged_tenant = %s",
                (PLATFORM_TENANT_ID, tenant_id),
            ).fetchone()
        return row is not None and row[0] == "done"

    def _record(self, actor: TenantContext, tenant_id: UUID) -> dict[str, Any]:
        """Record the purge (once), revoke the tenant's credentials; the tenant's audit head."""
        now = self.clock.now()
        with self.db.tenant_transaction(tenant_id) as tx:
            exists = tx.execute(
                "SELECT 1 FROM tenantguard.tenants WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
            head = tx.execute(
                "SELECT seq, encode(chain_hash, 'hex') FROM tenantguard.audit_events"
                " WHERE tenant_id = %s ORDER BY seq DESC LIMIT 1",
                (tenant_id,),
            ).fetchone()
            tx.execute(
                "UPDATE tenantguard.api_keys SET revoked_at = %s WHERE tenant_id = %s"
                " AND revoked_at IS NULL",
                (now, tenant_id),
            )
            tx.execute(
                "UPDATE tenantguard.sessions SET revoked_at = %s, revoke_reason = 'tenant_purged'"
                " WHERE tenant_id = %s AND revoked_at IS NULL",
                (now, tenant_id),
            )
        with self.db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            recorded = tx.execute(
                "SELECT 1 FROM tenantguard.tenant_purges WHERE tenant_id = %s"
                " AND purged_tenant = %s",
                (PLATFORM_TENANT_ID, tenant_id),
            ).fetchone()
            if recorded is None:
                if exists is None:
                    raise NotFound()
                tx.execute(
                    "INSERT INTO tenantguard.tenant_purges (tenant_id, purged_tenant,"
                    " requested_at, requested_by, state) VALUES (%s, %s, %s, %s, 'running')",
                    (
                        PLATFORM_TENANT_ID,
                        tenant_id,
                        now,
                        f"{actor.principal.type}:{actor.principal.id}",
                    ),
                )
                record_action(
                    tx,
                    actor,
                    action="tenant.purge_started",
                    target_type="tenant",
                    target_id=str(tenant_id),
                    now=now,
                )
        return {} if head is None else {"seq": int(head[0]), "chain_hash": str(head[1])}

    def _objects(self, tenant_id: UUID) -> int:
        deleted = 0
        for key in self.store.keys(object_key(tenant_id)):
            self.store.delete(key)
            deleted += 1
        directory = tenant_directory(self.data_root, tenant_id)
        if directory.is_symlink():
            directory.unlink()  # never followed
        elif directory.exists():
            # rmtree works from directory descriptors here (it avoids symlink attacks): a
            # link inside the tenant's workspace is removed, never followed.
            assert shutil.rmtree.avoids_symlink_attacks  # noqa: S101
            shutil.rmtree(directory)
        return deleted

    def _tombstone(
        self, actor: TenantContext, tenant_id: UUID, report: PurgeReport, head: dict[str, Any]
    ) -> None:
        now = self.clock.now()
        summary = {
            "rows": report.rows,
            "objects": report.objects,
            "keys_destroyed": report.keys_destroyed,
            "audit_head": head,  # the tenant's chain as it stood when the purge began
        }
        with self.db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            done = tx.execute(
                "UPDATE tenantguard.tenant_purges SET state = 'done', finished_at = %s,"
                " report = %s WHERE tenant_id = %s AND purged_tenant = %s AND state = 'running'"
                " RETURNING 1",
                (now, Jsonb(summary), PLATFORM_TENANT_ID, tenant_id),
            ).fetchone()
            if done is not None:
                record_action(
                    tx,
                    actor,
                    action="tenant.purged",
                    target_type="tenant",
                    target_id=str(tenant_id),
                    now=now,
                    payload=summary,
                )
        _log.info("purge.done", tenant_id=str(tenant_id), tables=len(report.rows))
