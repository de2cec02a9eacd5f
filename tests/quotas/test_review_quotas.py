"""Review findings on agent-bound keys, quotas and the messaging tool: each test states what
should hold; each was a strict xfail while its defect was open (the defect is named above it),
and is kept, fixed."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.mail import OutboxMailer
from tenantguard.quotas.core import Limit, Subject, checks_for, decide
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
OPS = "ops@acme.example"
NOW = int(datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000
WHO = Subject(credential="k", agent="helper", run="r")


def _outbox(settings: Settings) -> list[str]:
    return [str(m["To"]) for m in OutboxMailer(Path(settings.data_root) / "outbox").messages()]


def _mailer_run(client: TestClient, h: dict[str, str]) -> str:
    grants = {"tools": {"send_message": {"recipients": [OPS]}, "memory_read": {}}}
    assert client.put("/api/admin/tool-policy", json=grants, headers=h).status_code == 200
    assert client.put("/api/agents/mailer", json=grants, headers=h).status_code == 200
    run = client.post("/api/runs", json={"agent": "mailer"}, headers=h)
    assert run.status_code == 201, run.text
    return str(run.json()["id"])


def _send(
    client: TestClient, h: dict[str, str], run: str, to: list[str], subject: str, body: str
) -> Any:
    """A send_message call, its JSON written by hand (lone surrogates survive the trip)."""
    call = {"tool": "send_message", "arguments": {"to": to, "subject": subject, "body": body}}
    return client.post(
        f"/api/runs/{run}/tool-calls",
        content=json.dumps(call),
        headers={**h, "Content-Type": "application/json"},
    )


# Defect (fixed): send_message: U+2028/U+0085 pass the schema, then EmailMessage raises
# ValueError: 500
@pytest.mark.parametrize(
    ("to", "subject"),
    [([OPS], "hi\u2028Bcc: loot@evil.example"), ([OPS], "hi\x85there"), (["\u2028" + OPS], "hi")],
)
def test_a_unicode_line_break_in_a_header_is_refused_not_a_500(
    client: TestClient, as_tenant: AsTenant, settings: Settings, to: list[str], subject: str
) -> None:
    _, h = as_tenant("t")
    run = _mailer_run(client, h)
    answer = _send(client, h, run, to, subject, "text")
    assert answer.status_code == 403, answer.text
    assert answer.json()["code"] == "capability_denied"
    assert _outbox(settings) == []


# Defect (fixed): send_message: a lone surrogate in subject or body passes the gate, then 500 on
# encode
@pytest.mark.parametrize(("subject", "body"), [("\ud800", "text"), ("hi", "\udfff")])
def test_a_lone_surrogate_in_a_message_is_refused_not_a_500(
    client: TestClient, as_tenant: AsTenant, subject: str, body: str
) -> None:
    _, h = as_tenant("t")
    run = _mailer_run(client, h)
    answer = _send(client, h, run, [OPS], subject, body)
    assert 400 <= answer.status_code < 500, answer.text


# Defect (fixed): recipient check strip()s Unicode spaces (NBSP) but mail goes to the unstripped
# address
def test_a_recipient_is_checked_exactly_as_it_is_sent(
    client: TestClient, as_tenant: AsTenant, settings: Settings
) -> None:
    _, h = as_tenant("t")
    run = _mailer_run(client, h)
    answer = _send(client, h, run, ["\u00a0" + OPS], "hi", "text")
    assert answer.status_code == 403, answer.text
    assert _outbox(settings) == []  # today: one mail to "\xa0ops@acme.example", never granted


# Defect (fixed): uniqueItems is case-sensitive, the recipient grant is not: one mailbox gets two
# copies
def test_one_recipient_in_two_cases_gets_one_copy_at_most(
    client: TestClient, as_tenant: AsTenant, settings: Settings
) -> None:
    _, h = as_tenant("t")
    run = _mailer_run(client, h)
    answer = _send(client, h, run, [OPS, OPS.upper()], "hi", "text")  # [OPS, OPS] is refused
    if answer.status_code == 200:  # a fix may send one copy instead of refusing
        assert len(_outbox(settings)) == 1
    else:
        assert answer.status_code == 403, answer.text
        assert _outbox(settings) == []


# Defect (fixed): _charge returns on a tool_calls RateLimited before stopping a run whose messages
# budget this call used up
def test_a_run_whose_message_budget_a_refused_call_used_up_is_stopped(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    _, h = as_tenant("t")
    run = _mailer_run(client, h)
    limits = [
        {"metric": "messages", "scope": "run", "per": "run", "limit": 1},
        {"metric": "tool_calls", "scope": "credential", "per": "minute", "limit": 1},
    ]
    assert client.put("/api/admin/quotas", json={"limits": limits}, headers=h).status_code == 200
    entry = client.post("/api/memory", json={"key": "k", "content": "c"}, headers=h).json()["id"]
    read = {"tool": "memory_read", "arguments": {"id": entry}}
    assert client.post(f"/api/runs/{run}/tool-calls", json=read, headers=h).status_code == 200
    refused = _send(client, h, run, [OPS], "hi", "text")  # its message is counted: 1 of 1
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    # The run's whole message budget is used up: the run must stop, as when the call passes.
    assert client.get(f"/api/runs/{run}", headers=h).json()["status"] == "stopped"
    clock.advance(timedelta(minutes=1))
    after = client.post(f"/api/runs/{run}/tool-calls", json=read, headers=h)
    assert after.status_code == 409
    assert after.json()["code"] == "run_stopped"


# Defect (fixed): decide gives a retry_after (Retry-After) for a limit that can never pass: limit
# 0 or cost > limit
def test_a_limit_that_can_never_pass_sends_no_retry_after() -> None:
    for limit, cost in [
        (Limit("requests", "tenant", "minute", 0), 1),
        (Limit("messages", "agent", "minute", 2), 3),
        (Limit("messages", "tenant", "day", 2), 3),
    ]:
        checks = checks_for([limit], limit.metric, WHO, NOW)
        verdict, _ = decide(checks, {}, cost=cost, now=NOW)
        assert not verdict.allowed
        assert verdict.retry_after is None, (limit, cost)  # None: waiting does not help


# Defect (fixed): the tenant's own requests limits also gate /api/admin/quotas: a limit of 0 (or a
# month's 1) locks every admin out of undoing it
def test_a_tenant_can_always_lift_its_own_request_limit(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    zero = {"metric": "requests", "scope": "tenant", "per": "month", "limit": 0}
    set_ = client.put("/api/admin/quotas", json={"limits": [zero]}, headers=h)
    if set_.status_code == 422:  # a fix may refuse such a limit outright
        return
    assert set_.status_code == 200, set_.text
    lifted = client.put("/api/admin/quotas", json={"limits": []}, headers=h)
    assert lifted.status_code == 200, lifted.text  # today: 429 until the month ends, and after
