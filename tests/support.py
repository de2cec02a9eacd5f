"""Helpers shared by the test modules."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tenantguard.identity import totp
from tenantguard.identity.sessions import Issued
from tenantguard.testing import FakeClock


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if text in line:
            found.append(line)
    return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def enrolled(client: TestClient, login: Issued, clock: FakeClock) -> tuple[str, list[str]]:
    """Enrol and confirm TOTP for the signed-in user: (seed, recovery codes)."""
    h = bearer(login.access_token)
    started = client.post("/api/mfa/totp", headers=h)
    assert started.status_code == 201
    seed = started.json()["secret"]
    code = totp.code_at(seed, totp.step_of(clock.now()))
    confirmed = client.post("/api/mfa/totp/confirm", json={"code": code}, headers=h)
    assert confirmed.status_code == 200
    return seed, confirmed.json()["recovery_codes"]
