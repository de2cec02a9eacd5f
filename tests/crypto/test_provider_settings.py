"""The key provider is chosen by settings, and the gateway fails closed when it cannot be used:
a group-readable key file, a wrong HSM PIN, a missing token. With a working HSM, the vault
seals through it end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tenantguard.crypto.keyring import open_keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import ConfigurationError, KeyProviderUnavailable
from tenantguard.gateway import create_app
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tests.crypto.conftest import Token


def _start(settings: Settings, db: Database, clock: FakeClock) -> None:
    with TestClient(create_app(settings, database=db, clock=clock)):
        pass


def test_group_readable_key_file_stops_the_gateway(
    tmp_path: Path, db: Database, clock: FakeClock
) -> None:
    settings = Settings(data_root=tmp_path)
    _start(settings, db, clock)  # first start creates the key file
    (tmp_path / "keys" / "kek-0001.key").chmod(0o640)
    with pytest.raises(ConfigurationError, match="group or others"):
        _start(settings, db, clock)


def _hsm_settings(tmp_path: Path, token: Token, pin: str, label: str | None = None) -> Settings:
    return Settings(
        data_root=tmp_path,
        kek_provider="pkcs11",
        pkcs11_module=token.module,
        pkcs11_token=label or token.label,
        pkcs11_pin=SecretStr(pin),
    )


@pytest.mark.parametrize(
    ("pin", "label"),
    [("00000000", None), (None, "no-such-token")],
    ids=["wrong pin", "missing token"],
)
def test_unusable_hsm_stops_the_gateway(
    tmp_path: Path,
    softhsm: Token,
    db: Database,
    clock: FakeClock,
    pin: str | None,
    label: str | None,
) -> None:
    settings = _hsm_settings(tmp_path, softhsm, pin or softhsm.pin.get_secret_value(), label)
    with pytest.raises(KeyProviderUnavailable):
        _start(settings, db, clock)


def test_hsm_without_a_kek_stops_the_gateway_until_init(
    tmp_path: Path, softhsm: Token, db: Database, clock: FakeClock
) -> None:
    """The gateway never mints an HSM key by itself: `tenantguard init` does (create=True)."""
    settings = _hsm_settings(tmp_path, softhsm, softhsm.pin.get_secret_value())
    ring = open_keyring(settings, clock=clock, create=True)  # what `init` does
    assert ring.kek.active_id().startswith("pkcs11-")
    ring.close()  # `init` ends here; the gateway logs in on its own
    _start(settings, db, clock)


def test_vault_seals_through_the_hsm(
    tmp_path: Path,
    softhsm: Token,
    db: Database,
    clock: FakeClock,
    make_tenant: Callable[[str], NewTenant],
) -> None:
    settings = _hsm_settings(tmp_path, softhsm, softhsm.pin.get_secret_value())
    open_keyring(settings, clock=clock, create=True).close()
    tenant = make_tenant("hsm")
    h = {"Authorization": f"Bearer {tenant.admin_key.secret}"}
    with TestClient(create_app(settings, database=db, clock=clock)) as client:
        assert client.put("/api/secrets/k", json={"value": "v"}, headers=h).status_code == 200
    with db.tenant_transaction(tenant.tenant_id) as tx:
        row = tx.execute("SELECT kek_id FROM tenantguard.data_keys").fetchone()
    assert row is not None
    assert str(row[0]).startswith("pkcs11-")
