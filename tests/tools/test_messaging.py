"""The messaging tool: mail goes only to recipients every layer grants (the agent's and the
tenant's), one copy per recipient, nothing smuggled into a header, and every recipient counts
as one message against the `messages` quotas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.mail import OutboxMailer
from tenantguard.settings import Settings

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
OPS, CFO, EVIL = "ops@acme.example", "cfo@acme.example", "loot@evil.example"


def _outbox(settings: Settings) -> list[tuple[str, str]]:
    mails = OutboxMailer(Path(settings.data_root) / "outbox").messages()
    return [(str(m["To"]), str(m["Subject"])) for m in mails]


def _run(client: TestClient, h: dict[str, str], agent: list[str], tenant: list[str]) -> str:
    policy = {"tools": {"send_message": {"recipients": tenant}}}
    grants = {"tools": {"send_message": {"recipients": agent}}}
    assert client.put("/api/admin/tool-policy", json=policy, headers=h).status_code == 200
    assert client.put("/api/agents/mailer", json=grants, headers=h).status_code == 200
    run = client.post("/api/runs", json={"agent": "mailer"}, headers=h)
    assert run.json()["tools"] == ["send_message"]
    return str(run.json()["id"])


def _send(
    client: TestClient, h: dict[str, str], run: str, to: list[str], subject: str = "hi"
) -> Any:
    call = {"tool": "send_message", "arguments": {"to": to, "subject": subject, "body": "text"}}
    return client.post(f"/api/runs/{run}/tool-calls", json=call, headers=h)


def test_mail_goes_to_recipients_every_layer_grants_one_copy_each(
    client: TestClient, as_tenant: AsTenant, settings: Settings
) -> None:
    _, h = as_tenant("t")
    run = _run(client, h, agent=[OPS, CFO], tenant=[OPS, CFO])
    sent = _send(client, h, run, [OPS, CFO.upper()])
    assert sent.status_code == 200, sent.text
    assert sent.json()["output"] == {"sent": 2}
    assert sorted(_outbox(settings)) == [(CFO.upper(), "hi"), (OPS, "hi")]  # nobody sees another


def test_a_recipient_any_layer_lacks_is_refused_and_nothing_is_sent(
    client: TestClient, as_tenant: AsTenant, settings: Settings
) -> None:
    _, h = as_tenant("t")
    run = _run(client, h, agent=[OPS, CFO], tenant=[OPS])  # the tenant never granted CFO
    for to in ([EVIL], [CFO], [OPS, EVIL]):
        refused = _send(client, h, run, to)
        assert refused.status_code == 403, to
        assert "recipient_not_allowed" in refused.json()["detail"]
    assert _outbox(settings) == []


def test_nothing_can_be_smuggled_into_a_header(
    client: TestClient, as_tenant: AsTenant, settings: Settings
) -> None:
    _, h = as_tenant("t")
    run = _run(client, h, agent=[OPS], tenant=[OPS])
    for to, subject in [
        ([f"{OPS}\r\nBcc: {EVIL}"], "hi"),
        ([f"{OPS}\n"], "hi"),
        ([f"Ops <{OPS}>"], "hi"),
        ([f"{OPS}, {EVIL}"], "hi"),
        ([OPS], f"hi\r\nBcc: {EVIL}"),
        ([OPS], "hi\n"),
        ([OPS] * 2, "hi"),
        ([OPS] * 11, "hi"),
    ]:
        refused = _send(client, h, run, to, subject)
        assert refused.status_code == 403, (to, subject)
        assert "arguments_invalid" in refused.json()["detail"]
    assert _outbox(settings) == []


def test_each_recipient_counts_as_one_message(
    client: TestClient, as_tenant: AsTenant, settings: Settings
) -> None:
    _, h = as_tenant("t")
    run = _run(client, h, agent=[OPS, CFO], tenant=[OPS, CFO])
    limit = {"metric": "messages", "scope": "agent", "per": "day", "limit": 3}
    assert client.put("/api/admin/quotas", json={"limits": [limit]}, headers=h).status_code == 200
    assert _send(client, h, run, [OPS, CFO]).status_code == 200  # 2 of 3
    refused = _send(client, h, run, [OPS, CFO])  # 4 > 3: refused whole
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert _send(client, h, run, [OPS]).status_code == 200  # 3 of 3
    assert len(_outbox(settings)) == 3
