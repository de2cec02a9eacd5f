"""A real SoftHSM2 token for the PKCS#11 tests, initialised in a private directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class Token:
    module: Path
    label: str
    pin: SecretStr


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """A fresh token. SoftHSM2 is installed by scripts/test (the README's test command)."""
    util = shutil.which("softhsm2-util")
    missing = "SoftHSM2 is missing: scripts/test installs it (Debian package softhsm2)"
    assert util is not None, missing
    assert SOFTHSM_MODULE.exists(), missing
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(  # noqa: S603 (fixed arguments, our own test token)
        [
            util,
            "--init-token",
            "--free",
            "--label",
            "tenantguard-test",
            "--so-pin",
            "87654321",
            "--pin",
            "24681357",
        ],
        check=True,
        capture_output=True,
    )
    yield Token(SOFTHSM_MODULE, "tenantguard-test", SecretStr("24681357"))
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous
