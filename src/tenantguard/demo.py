"""The guided demo: a gateway with two tenants, attacks refused, audit verified, and at the
end one tenant purged.

It starts the embedded database and the real gateway (uvicorn on a loopback port), drives it
over HTTP like a client would, and prints what it saw. Every line of the report is a check
that can fail; the demo exits non-zero if any does. It leaves nothing running when it ends,
Ctrl-C included (the server thread, the pool and the embedded server are stopped in `finally`
blocks; a temporary data root is removed).
"""

from __future__ import annotations

import base64
import contextlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from tenantguard.audit import checkpoint as notes
from tenantguard.audit import merkle, verify_tenant
from tenantguard.clock import SystemClock
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto import signing
from tenantguard.crypto.keyring import open_keyring
from tenantguard.data.tenants import NewTenant, create_tenant
from tenantguard.db import Database, endpoints
from tenantguard.db.doctor import examine
from tenantguard.errors import AuditVerificationFailed
from tenantguard.gateway import create_app
from tenantguard.identity import totp, users
from tenantguard.logs import configure_logging
from tenantguard.mail import OutboxMailer
from tenantguard.purge import Purger
from tenantguard.settings import LogConfig, Settings

_DEMO = Principal(type="system", id="demo")


@dataclass
class Report:
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, label: str, passed: bool, seen: str) -> None:
        self.rows.append((label, passed, seen))

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.rows)


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tenantguard-demo-gateway", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _client(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _scenario(base: str, a: NewTenant, b: NewTenant, report: Report) -> None:
    check = report.check
    with _client(base, a.admin_key.secret) as ca, _client(base, b.admin_key.secret) as cb:
        memo = ca.post("/api/memory", json={"key": "vip", "content": "Acme's VIP list"}).json()
        run = ca.post("/api/runs", json={"agent": "triage", "input": {"ticket": "A-1"}}).json()
        ca.post(f"/api/runs/{run['id']}/events", json={"type": "tool_call", "data": {}})
        cb.post("/api/memory", json={"key": "vip", "content": "Globex's own VIP list"})
        listed_a = [m["content"] for m in ca.get("/api/memory").json()["items"]]
        listed_b = [m["content"] for m in cb.get("/api/memory").json()["items"]]
        check("Tenant A sees its own memory", listed_a == ["Acme's VIP list"], str(listed_a))
        check(
            "Tenant B sees its own memory, same key, no collision",
            listed_b == ["Globex's own VIP list"],
            str(listed_b),
        )

        attempts: list[tuple[str, Callable[[], httpx.Response]]] = [
            ("GET A's memory entry", lambda: cb.get(f"/api/memory/{memo['id']}")),
            (
                "PATCH A's memory entry",
                lambda: cb.patch(f"/api/memory/{memo['id']}", json={"content": "pwned"}),
            ),
            ("DELETE A's memory entry", lambda: cb.delete(f"/api/memory/{memo['id']}")),
            ("read A's memory versions", lambda: cb.get(f"/api/memory/{memo['id']}/versions")),
            ("GET A's run", lambda: cb.get(f"/api/runs/{run['id']}")),
            (
                "append to A's run",
                lambda: cb.post(
                    f"/api/runs/{run['id']}/events", json={"type": "inject", "data": {}}
                ),
            ),
        ]
        for label, attempt in attempts:
            status = attempt().status_code
            check(f"Tenant B tries to {label}", status == 404, f"HTTP {status}")
        still = ca.get(f"/api/memory/{memo['id']}").json()
        check(
            "A's entry is unchanged after B's attempts",
            still["content"] == memo["content"] and still["version"] == 1,
            f"version {still['version']}",
        )

        bad = httpx.get(f"{base}/api/memory", headers={"Authorization": "Bearer tg_sk_nope"})
        body = bad.json()
        check(
            "A forged key is refused with a problem document",
            bad.status_code == 401
            and bad.headers["content-type"] == "application/problem+json"
            and body.get("request_id") == bad.headers.get("x-request-id"),
            f"HTTP {bad.status_code} {body.get('code')} request_id={body.get('request_id')}",
        )

        narrow = ca.post(
            "/api/api-keys", json={"name": "reader", "capabilities": ["memory:read"]}
        ).json()
        with _client(base, narrow["secret"]) as reader:
            denied = reader.post("/api/memory", json={"key": "x", "content": "y"})
            widen = reader.post(
                "/api/api-keys", json={"name": "escalate", "capabilities": ["api_keys:manage"]}
            )
        check(
            "A read-only key cannot write",
            denied.status_code == 403,
            f"HTTP {denied.status_code} {denied.json().get('code')}",
        )
        check(
            "A read-only key cannot mint a stronger key",
            widen.status_code == 403,
            f"HTTP {widen.status_code}",
        )
        ca.delete(f"/api/api-keys/{narrow['id']}")
        with _client(base, narrow["secret"]) as revoked:
            after = revoked.get("/api/memory").status_code
        check("A revoked key stops working on the next request", after == 401, f"HTTP {after}")


def _vault_and_people(
    base: str,
    *,
    a: NewTenant,
    b: NewTenant,
    root: Path,
    db: Database,
    clock: SystemClock,
    report: Report,
) -> None:
    """The vault keeps values in; a person signs in by magic link, is held until a second
    factor, steps up with TOTP; revoking the session ends it on the next request."""
    check = report.check
    secret_value = "sk-demo-" + uuid4().hex
    with _client(base, a.admin_key.secret) as ca, _client(base, b.admin_key.secret) as cb:
        written = ca.put("/api/secrets/openai-key", json={"value": secret_value})
        listed = ca.get("/api/secrets")
        theirs = cb.get("/api/secrets/openai-key")
        check(
            "A vault value never comes back out",
            written.status_code == 200 and secret_value not in written.text + listed.text,
            f"HTTP {written.status_code}; listing shows names and versions only",
        )
        check(
            "Tenant B cannot see A's secret",
            theirs.status_code == 404,
            f"HTTP {theirs.status_code}",
        )
        ctx = TenantContext(a.tenant_id, _DEMO, frozenset(), "demo-people")
        with db.tenant_transaction(a.tenant_id) as tx:
            users.add(tx, ctx, email="ada@acme.example", role="owner", now=clock.now())
        anonymous = httpx.Client(base_url=base, timeout=10)
        anonymous.post(
            "/api/auth/magic-link", json={"tenant": str(a.tenant_id), "email": "ada@acme.example"}
        )
        mail = OutboxMailer(root / "outbox").messages()[-1]
        body = mail.get_body(preferencelist=("plain",))
        token = re.search(r"tg_ml_[0-9A-Za-z]+", body.get_content() if body else "")
        redeemed = anonymous.post(
            "/api/auth/magic-link/redeem",
            json={"tenant": str(a.tenant_id), "token": token[0] if token else ""},
        ).json()
        person = {"Authorization": f"Bearer {redeemed.get('access_token', '')}"}
        held = anonymous.get("/api/memory", headers=person)
        check(
            "An owner signed in by magic link is held until a second factor",
            held.status_code == 401 and held.json().get("code") == "step_up_required",
            f"HTTP {held.status_code} {held.json().get('code')}",
        )
        seed = anonymous.post("/api/mfa/totp", headers=person).json()["secret"]
        code = totp.code_at(seed, totp.step_of(clock.now()))
        anonymous.post("/api/mfa/totp/confirm", json={"code": code}, headers=person)
        # The confirming code used this step; the next step's code is within the window.
        code = totp.code_at(seed, totp.step_of(clock.now()) + 1)
        stepped = anonymous.post("/api/auth/step-up", json={"code": code}, headers=person)
        person = {"Authorization": f"Bearer {stepped.json().get('access_token', '')}"}
        after = anonymous.get("/api/memory", headers=person)
        check(
            "After a TOTP step-up the owner can act",
            after.status_code == 200,
            f"HTTP {after.status_code}",
        )
        anonymous.post("/api/auth/logout", headers=person)
        ended = anonymous.get("/api/memory", headers=person)
        check(
            "Logging out ends the session on the next request",
            ended.status_code == 401,
            f"HTTP {ended.status_code}",
        )
        anonymous.close()


def _operator_access(
    base: str, *, a: NewTenant, root: Path, db: Database, clock: SystemClock, report: Report
) -> None:
    """The vendor's operator signs in (magic link, TOTP), is refused A's data until A opts
    in, then reads it; A sees the read, who made it and why."""
    check = report.check
    platform = TenantContext(PLATFORM_TENANT_ID, _DEMO, frozenset(), "demo-operator")
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        users.add(tx, platform, email="ops@vendor.example", role="operator", now=clock.now())
    with httpx.Client(base_url=base, timeout=10) as anonymous:
        anonymous.post("/api/operator/auth/magic-link", json={"email": "ops@vendor.example"})
        mail = OutboxMailer(root / "outbox").messages()[-1]
        body = mail.get_body(preferencelist=("plain",))
        token = re.search(r"tg_ml_[0-9A-Za-z]+", body.get_content() if body else "")
        signed_in = anonymous.post(
            "/api/operator/auth/magic-link/redeem", json={"token": token[0] if token else ""}
        ).json()
        ops = {"Authorization": f"Bearer {signed_in.get('access_token', '')}"}
        seed = anonymous.post("/api/mfa/totp", headers=ops).json()["secret"]
        code = totp.code_at(seed, totp.step_of(clock.now()))
        anonymous.post("/api/mfa/totp/confirm", json={"code": code}, headers=ops)
        code = totp.code_at(seed, totp.step_of(clock.now()) + 1)
        stepped = anonymous.post("/api/auth/step-up", json={"code": code}, headers=ops)
        ops = {"Authorization": f"Bearer {stepped.json().get('access_token', '')}"}
        url = f"/api/operator/tenants/{a.tenant_id}/memory/read"
        why = {"reason": "demo: ticket 4711, the customer asked why a memory is missing"}
        refused = anonymous.post(url, json=why, headers=ops)
        check(
            "An operator cannot read A's data without A's opt-in",
            refused.status_code == 403
            and refused.json().get("code") == "operator_access_not_granted",
            f"HTTP {refused.status_code} {refused.json().get('code')}",
        )
        with _client(base, a.admin_key.secret) as ca:
            ca.put("/api/admin/operator-access", json={"enabled": True})
            read = anonymous.post(url, json=why, headers=ops)
            seen = ca.get("/api/admin/me/operator-reads").json()
        latest = seen[0] if isinstance(seen, list) and seen else {}
        check(
            "With A's opt-in the operator reads, and A sees who read what and why",
            read.status_code == 200
            and latest.get("action") == "operator.read"
            and latest.get("why") == why["reason"],
            f"HTTP {read.status_code}; A's view: {latest.get('action')} by an operator",
        )


def _personal_data(base: str, a: NewTenant, b: NewTenant, report: Report) -> None:
    """A's PII policy: emails in prompts reversible, the rest strict. A prompt is redacted
    before a model would see it; only A, in that conversation, gets the email back."""
    prompt = (
        "Summarise the complaint of Dr Ada Lovelace (ada@acme.example, card 4111 1111 1111 1111)"
    )
    with _client(base, a.admin_key.secret) as ca, _client(base, b.admin_key.secret) as cb:
        ca.put("/api/admin/pii-policy", json={"modes": {"email": {"prompt": "reversible"}}})
        redacted = ca.post(
            "/api/pii/redact", json={"text": prompt, "channel": "prompt", "conversation": "c-1"}
        ).json()
        text = str(redacted.get("text", ""))
        report.check(
            "A prompt reaches the model without the name, email or card in it",
            all(v not in text for v in ("Ada Lovelace", "ada@acme.example", "4111")),
            text,
        )
        back = {"text": text, "conversation": "c-1"}
        theirs = cb.post("/api/pii/reidentify", json=back).json()
        mine = ca.post("/api/pii/reidentify", json=back).json()
        report.check(
            "Only A, in that conversation, turns the email token back into the email",
            "ada@acme.example" not in str(theirs.get("text", ""))
            and "ada@acme.example" in str(mine.get("text", "")),
            f"B restored {theirs.get('restored')}, A restored {mine.get('restored')}",
        )


def _data_in_and_out(base: str, a: NewTenant, b: NewTenant, report: Report) -> None:
    """A's artifact: sealed, downloaded only through its signed link, which B cannot use;
    and a client's retry with an Idempotency-Key that does not write twice."""
    with _client(base, a.admin_key.secret) as ca, _client(base, b.admin_key.secret) as cb:
        made = ca.post(
            "/api/artifacts",
            params={"name": "contract.pdf"},
            content=b"%PDF-1.7 Acme's signed contract",
            headers={"Content-Type": "application/pdf"},
        ).json()
        link = ca.post(f"/api/artifacts/{made['id']}/url", json={}).json()["url"]
        mine = httpx.get(base + link)
        report.check(
            "A's artifact downloads through its signed link (and no other way)",
            mine.status_code == 200
            and mine.content.startswith(b"%PDF")
            and cb.get(f"/api/artifacts/{made['id']}").status_code == 404,
            f"HTTP {mine.status_code}, {len(mine.content)} bytes",
        )
        token = link.rsplit("token=", 1)[1]
        path = link.split("?", 1)[0]
        other_tenant = httpx.get(
            f"{base}/api/artifact-downloads/{b.tenant_id}/{made['id']}", params={"token": token}
        )
        tampered = httpx.get(
            base + path, params={"token": token[:-2] + ("AA" if token[-2:] != "AA" else "BB")}
        )
        report.check(
            "A's link is refused under B's tenant, and when tampered with",
            other_tenant.status_code == tampered.status_code == 403,
            f"{other_tenant.json().get('code')}, {tampered.json().get('code')}",
        )
        keyed = {"Idempotency-Key": f"demo-{uuid4()}"}
        entry = {"key": "retry", "content": "written once"}
        first = ca.post("/api/memory", json=entry, headers=keyed)
        again = ca.post("/api/memory", json=entry, headers=keyed)
        report.check(
            "A retried write with its Idempotency-Key is answered, not written again",
            first.status_code == again.status_code == 201
            and again.headers.get("idempotent-replayed") == "true"
            and again.json()["id"] == first.json()["id"],
            f"HTTP {first.status_code} then replayed {again.headers.get('idempotent-replayed')}",
        )


def _audit_evidence(base: str, a: NewTenant, report: Report) -> None:
    """A signed checkpoint of A's log, checked the way an outside auditor would: the note's
    signature against the public JWKS, and inclusion and consistency proofs against its root,
    with nothing but RFC 6962 / 9162 arithmetic."""
    with _client(base, a.admin_key.secret) as ca:
        first = ca.post("/api/audit/checkpoints").json()
        ca.post("/api/memory", json={"key": "after-the-checkpoint", "content": "more history"})
        second = ca.post("/api/audit/checkpoints").json()
        jwks = ca.get("/.well-known/jwks.json").json()["keys"]
        keys = [
            signing.PublicKey(
                k["kid"],
                base64.urlsafe_b64decode(k["x"] + "=="),
                datetime.min.replace(tzinfo=UTC),
                None,
            )
            for k in jwks
        ]
        try:
            old = notes.verify(first["note"], keys, key_name="tenantguard")
            new = notes.verify(second["note"], keys, key_name="tenantguard")
            for index in range(new.tree_size):
                proof = ca.get(
                    "/api/audit/proofs/inclusion",
                    params={"index": index, "tree_size": new.tree_size},
                ).json()
                merkle.verify_inclusion(
                    index,
                    new.tree_size,
                    base64.b64decode(proof["leaf_hash"]),
                    [base64.b64decode(h) for h in proof["audit_path"]],
                    new.root_hash,
                )
            consistency = ca.get(
                "/api/audit/proofs/consistency",
                params={"first": old.tree_size, "second": new.tree_size},
            ).json()
            merkle.verify_consistency(
                old.tree_size,
                new.tree_size,
                [base64.b64decode(h) for h in consistency["consistency"]],
                old.root_hash,
                new.root_hash,
            )
            seen, passed = (
                f"{new.tree_size} events, {new.tree_size} inclusion proofs, grew from"
                f" {old.tree_size} consistently",
                True,
            )
        except (AuditVerificationFailed, KeyError, ValueError) as exc:
            seen, passed = f"{type(exc).__name__}", False
    report.check("A's signed Merkle checkpoints and proofs verify independently", passed, seen)


def _purge(
    settings: Settings, db: Database, b: NewTenant, clock: SystemClock, report: Report
) -> None:
    """B leaves: purged (keys shredded, artifacts, files and rows deleted, checked); the
    platform's chain keeps the tombstone and still verifies."""
    ring = open_keyring(settings, clock=clock)
    store = settings.object_store()
    actor = TenantContext(PLATFORM_TENANT_ID, _DEMO, frozenset(), "demo-purge")
    try:
        done = Purger(db, ring, store, settings.data_root, clock).purge(actor, b.tenant_id)
    finally:
        store.close()
        ring.close()
    report.check(
        "Tenant B is purged: nothing of it is left anywhere",
        done.verified and not done.left,
        f"{sum(done.rows.values())} rows in {len(done.rows)} tables, "
        f"{done.keys_destroyed} data keys destroyed",
    )
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        verdict = verify_tenant(tx, tenant_id=PLATFORM_TENANT_ID)
    report.check(
        "The platform's chain keeps B's tombstone and verifies",
        verdict.ok,
        f"{verdict.checked} events",
    )


def run_demo(*, data_root: Path | None, console: Console) -> bool:
    """Run the demo; print the report; return whether every check passed."""
    temporary = data_root is None
    root = Path(tempfile.mkdtemp(prefix="tenantguard-demo-")) if data_root is None else data_root
    root.mkdir(parents=True, exist_ok=True)
    configure_logging(
        LogConfig(level="warning", json=True),
        stream=(root / "gateway.log").open("a", encoding="utf-8"),
    )
    settings = Settings(data_root=root)
    report = Report()
    clock = SystemClock()
    console.print(f"[bold]tenantguard demo[/bold] — data under {root}")
    try:
        with (
            endpoints(settings.database()) as found,
            Database(found.app_url, application_name="tenantguard-gateway") as db,
        ):
            console.print("embedded PostgreSQL started; roles provisioned; migrations applied")
            a = create_tenant(db, name="Acme", actor=_DEMO, request_id="demo-a", now=clock.now())
            b = create_tenant(db, name="Globex", actor=_DEMO, request_id="demo-b", now=clock.now())
            console.print(
                f"tenant A (Acme)   {a.tenant_id}  key {a.admin_key.info.display_prefix}…"
            )
            console.print(
                f"tenant B (Globex) {b.tenant_id}  key {b.admin_key.info.display_prefix}…"
            )
            with _serving(create_app(settings, database=db, clock=clock)) as base:
                console.print(f"gateway listening on {base}")
                _scenario(base, a, b, report)
                _vault_and_people(base, a=a, b=b, root=root, db=db, clock=clock, report=report)
                _operator_access(base, a=a, root=root, db=db, clock=clock, report=report)
                _personal_data(base, a, b, report)
                _data_in_and_out(base, a, b, report)
                _audit_evidence(base, a, report)
            with db.system_transaction() as tx:
                doctor = examine(tx)
            report.check(
                "Doctor: RLS forced everywhere, service role safe",
                doctor.ok,
                f"{len(doctor.findings)} findings",
            )
            for label, tenant in (
                ("A", a.tenant_id),
                ("B", b.tenant_id),
                ("platform", PLATFORM_TENANT_ID),
            ):
                with db.tenant_transaction(tenant) as tx:
                    verdict = verify_tenant(tx, tenant_id=tenant)
                report.check(
                    f"Audit chain of {label} verifies", verdict.ok, f"{verdict.checked} events"
                )
            _purge(settings, db, b, clock, report)
    except KeyboardInterrupt:
        # The with-blocks above have already stopped the gateway, the pool and the server.
        console.print("interrupted: the gateway and the embedded database are stopped.")
        raise
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    table = Table(title="What the demo checked", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("seen")
    for label, passed, seen in report.rows:
        table.add_row(label, "[green]pass[/green]" if passed else "[red]FAIL[/red]", seen)
    console.print(table)
    verdict_line = (
        "[green]all checks passed[/green]" if report.ok else "[red]some checks failed[/red]"
    )
    console.print(f"{verdict_line}; the gateway and the embedded database are stopped.")
    return report.ok
