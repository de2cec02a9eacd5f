"""`tenantguard doctor`: read the live catalog and refuse an unsafe database.

It runs on the service's own connection (the role that will serve), and finds:

- a table with a `tenant_id` column without ENABLE + FORCE row-level security, without a
  policy whose USING and WITH CHECK are both `tenant_id = tenantguard.current_tenant()`, with
  a wider permissive policy that applies to the service, with a nullable `tenant_id`, or with
  no index leading with `tenant_id`;
- a service role that is a superuser, BYPASSRLS, CREATEROLE, an owner (of the database, the
  schema or a table) or a member of the owner role, or is not `tenantguard_app` at all;
- an audit table on which the service may UPDATE, DELETE or TRUNCATE, or which lacks its
  append-only triggers;
- `synchronous_commit` or `fsync` off (an acknowledged action could be lost);
- a view that is not `security_invoker`, a SECURITY DEFINER function not on the allow-list;
- migrations not yet applied.

Threat stopped: a deployment whose isolation or audit guarantees silently do not hold.
`serve` runs the same checks at start and refuses to serve when any finding exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenantguard.db import migrate
from tenantguard.db.pool import Connection
from tenantguard.db.roles import APP_ROLE, OWNER_ROLE
from tenantguard.errors import ConfigurationError

TENANT_PREDICATE = "(tenant_id = tenantguard.current_tenant())"
# Named, reviewed SECURITY DEFINER functions. Each one is a deliberate hole in RLS.
SECURITY_DEFINER_ALLOWED = frozenset(
    {
        "tenantguard.resolve_api_key",
        "tenantguard.resolve_refresh_token",
        "tenantguard.tenant_ids",
        "tenantguard.webhook_due_tenants",  # tenant ids with a webhook due, for the worker
        "tenantguard.purge_tenant_rows",  # a recorded, shredded tenant's rows, in its context
        "tenantguard.tenant_row_counts",  # what is left of a tenant, in its context
    }
)
_USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One reason the database is not safe to serve."""

    check: str
    subject: str
    problem: str


@dataclass(frozen=True, slots=True)
class DoctorReport:
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


def examine(conn: Connection) -> DoctorReport:
    """Run every check on `conn` (the service's connection). Never raises for a finding."""
    findings: list[Finding] = []
    for check in (
        _tenant_tables,
        _service_role,
        _audit_tables,
        _durability,
        _definers,
        _migrations,
    ):
        findings.extend(check(conn))
    return DoctorReport(tuple(sorted(findings)))


def _tenant_tables(conn: Connection) -> list[Finding]:
    tables = conn.execute(
        f"""
        SELECT c.oid, n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity,
               a.attnotnull, a.attnum
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                           AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMAS}
        """
    ).fetchall()
    policies = conn.execute(
        """
        SELECT schemaname || '.' || tablename, policyname, permissive, roles::text[], cmd,
               qual, with_check
        FROM pg_policies
        """
    ).fetchall()
    findings: list[Finding] = []
    for oid, name, rls, forced, notnull, attnum in tables:
        subject = str(name)
        if not rls:
            findings.append(Finding("rls", subject, "row-level security is not enabled"))
        if not forced:
            findings.append(Finding("rls", subject, "row-level security is not forced"))
        if not notnull:
            findings.append(Finding("rls", subject, "tenant_id is nullable"))
        leading = conn.execute(
            "SELECT 1 FROM pg_index WHERE indrelid = %s AND indkey[0] = %s LIMIT 1", (oid, attnum)
        ).fetchone()
        if leading is None:
            findings.append(Finding("rls", subject, "no key or index leads with tenant_id"))
        findings.extend(_policy_findings(subject, [p for p in policies if p[0] == subject]))
    return findings


def _applies_to_service(roles: list[str]) -> bool:
    return "public" in roles or APP_ROLE in roles


def _policy_findings(subject: str, policies: list[tuple[object, ...]]) -> list[Finding]:
    findings: list[Finding] = []
    isolating = False
    for _table, policyname, permissive, roles, cmd, qual, with_check in policies:
        if not isinstance(roles, list) or not _applies_to_service([str(r) for r in roles]):
            continue
        if permissive != "PERMISSIVE":
            continue  # restrictive policies only narrow what the service sees
        exact = qual == TENANT_PREDICATE and with_check == TENANT_PREDICATE
        if exact and cmd == "ALL":
            isolating = True
            continue
        using_ok = qual in (None, TENANT_PREDICATE)
        check_ok = with_check in (None, TENANT_PREDICATE) or cmd in ("SELECT", "DELETE")
        if not (using_ok and check_ok) or (qual is None and with_check is None):
            findings.append(
                Finding("rls", subject, f"policy {policyname} is wider than the tenant predicate")
            )
    if not isolating:
        findings.append(
            Finding("rls", subject, "no policy FOR ALL with USING and WITH CHECK on the tenant")
        )
    return findings


def _service_role(conn: Connection) -> list[Finding]:
    row = conn.execute(
        """
        SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole,
               pg_has_role(current_user, %s, 'MEMBER')
                   AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s),
               (SELECT d.datdba = r.oid FROM pg_database d WHERE d.datname = current_database()),
               EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspowner = r.oid AND {schemas}),
               EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relowner = r.oid AND {schemas})
        FROM pg_roles r WHERE r.rolname = current_user
        """.replace("{schemas}", _USER_SCHEMAS),
        (OWNER_ROLE, OWNER_ROLE),
    ).fetchone()
    if row is None:  # pragma: no cover - current_user always has a pg_roles row
        return [Finding("role", "current_user", "cannot read the service role")]
    name, superuser, bypass, createrole, member_of_owner, owns_db, owns_schema, owns_table = row
    subject = str(name)
    checks = [
        (name != APP_ROLE, f"the service must connect as {APP_ROLE}"),
        (superuser, "is a superuser (bypasses RLS)"),
        (bypass, "has BYPASSRLS"),
        (createrole, "has CREATEROLE"),
        (member_of_owner, f"is a member of {OWNER_ROLE}"),
        (owns_db, "owns the database"),
        (owns_schema, "owns a schema"),
        (owns_table, "owns a table (owners bypass unforced RLS and can alter policies)"),
    ]
    return [Finding("role", subject, problem) for failed, problem in checks if failed]


def _audit_tables(conn: Connection) -> list[Finding]:
    rows = conn.execute(
        f"""
        SELECT n.nspname || '.' || c.relname,
               has_table_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE'),
               has_table_privilege(c.oid, 'TRUNCATE'),
               (SELECT array_agg(t.tgtype) FROM pg_trigger t
                 WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled <> 'D'
                   AND t.tgfoid = to_regproc('tenantguard.refuse_audit_mutation'))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'audit\\_%' AND {_USER_SCHEMAS}
        """
    ).fetchall()
    findings: list[Finding] = []
    for name, update, delete, truncate, tgtypes in rows:
        for granted, verb in ((update, "UPDATE"), (delete, "DELETE"), (truncate, "TRUNCATE")):
            if granted:
                findings.append(Finding("audit", str(name), f"the service may {verb}"))
        # pg_trigger.tgtype bits: 2 BEFORE, 8 DELETE, 16 UPDATE, 32 TRUNCATE.
        bits = 0
        for tgtype in tgtypes or []:
            if int(tgtype) & 2:
                bits |= int(tgtype)
        for bit, verb in ((8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE")):
            if not bits & bit:
                findings.append(Finding("audit", str(name), f"no trigger refuses {verb}"))
    return findings


def _durability(conn: Connection) -> list[Finding]:
    findings: list[Finding] = []
    for setting in ("synchronous_commit", "fsync"):
        value = conn.execute("SELECT current_setting(%s)", (setting,)).fetchone()
        if value is None or value[0] == "off":
            findings.append(Finding("durability", setting, "is off: acknowledged work can be lost"))
    return findings


def _definers(conn: Connection) -> list[Finding]:
    findings: list[Finding] = []
    views = conn.execute(
        f"""
        SELECT n.nspname || '.' || c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {_USER_SCHEMAS}
          AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)
        """
    ).fetchall()
    findings.extend(
        Finding("definer", str(v), "view is not security_invoker (it bypasses RLS)")
        for (v,) in views
    )
    functions = conn.execute(
        f"""
        SELECT n.nspname || '.' || p.proname FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prosecdef AND {_USER_SCHEMAS}
        """
    ).fetchall()
    findings.extend(
        Finding("definer", str(f), "SECURITY DEFINER function is not on the allow-list")
        for (f,) in functions
        if f not in SECURITY_DEFINER_ALLOWED
    )
    return findings


def _migrations(conn: Connection) -> list[Finding]:
    try:
        waiting = migrate.pending(conn)
    except ConfigurationError as exc:
        return [Finding("migrations", "schema", exc.detail)]
    return [Finding("migrations", f"{m.version:04d}_{m.name}", "is not applied") for m in waiting]
