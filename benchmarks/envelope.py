"""Envelope encryption: the recipe vs raw AESGCM, and data-key unwraps with and without cache.

1. `aead.seal` / `aead.open_sealed` (header, length-prefixed associated data binding tenant,
   purpose and record) against `AESGCM.encrypt` / `decrypt` from `cryptography` with a random
   nonce and no associated data, on 1 KiB and 64 KiB payloads.
2. Getting a usable data key: unwrapping through the local key-file KEK, through a PKCS#11
   token (SoftHSM2, when installed), and a hit in the keyring's unwrap cache.

Interleaved rounds (each round runs every variant once, order rotating), medians and p95/p99,
ratios from the same run. Run: `.venv/bin/python benchmarks/envelope.py [--rounds 3000]`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from uuid import uuid4

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from tenantguard.crypto import aead
from tenantguard.crypto.kek import KekProvider, LocalKek, Pkcs11Kek
from tenantguard.crypto.keyring import _UnwrapCache, wrap_context

SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


def measure(ops: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    names = list(ops)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(min(200, rounds)):
        for name in names:
            ops[name]()
    for round_no in range(rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            ops[name]()
            samples[name].append((time.perf_counter() - started) * 1e6)
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(title: str, samples: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"{'variant':<28}{'p50 us':>10}{'p95 us':>10}{'p99 us':>10}")
    for name, values in samples.items():
        print(
            f"{name:<28}{statistics.median(values):>10.2f}{pct(values, 0.95):>10.2f}"
            f"{pct(values, 0.99):>10.2f}"
        )


def _seal_raw(key: AESGCM, payload: bytes) -> bytes:
    return key.encrypt(os.urandom(12), payload, None)


def recipe_ops() -> dict[str, Callable[[], object]]:
    key = AESGCM(AESGCM.generate_key(bit_length=256))
    binding = aead.Binding(uuid4(), "column:secret_versions.value", f"{uuid4()}|1")
    ops: dict[str, Callable[[], object]] = {}
    for size in (1024, 65536):
        payload = os.urandom(size)
        sealed = aead.seal(key, 1, payload, binding)
        nonce = os.urandom(12)
        raw = key.encrypt(nonce, payload, None)
        label = f"{size // 1024}KiB"
        ops[f"seal {label} recipe"] = partial(aead.seal, key, 1, payload, binding)
        ops[f"seal {label} raw"] = partial(_seal_raw, key, payload)
        ops[f"open {label} recipe"] = partial(aead.open_sealed, key, sealed, binding)
        ops[f"open {label} raw"] = partial(key.decrypt, nonce, raw, None)
    return ops


def _unwrap(provider: KekProvider, kek_id: str, wrapped: bytes, context: bytes) -> AESGCM:
    return AESGCM(provider.unwrap(kek_id, wrapped, context=context))


def unwrap_ops(tmp: Path) -> tuple[dict[str, Callable[[], object]], list[Pkcs11Kek]]:
    tenant = uuid4()
    context = wrap_context(tenant, "column:secret_versions.value", 1)
    material = AESGCM.generate_key(bit_length=256)
    providers: dict[str, KekProvider] = {"local": LocalKek(tmp / "keys", create=True)}
    opened: list[Pkcs11Kek] = []
    util = shutil.which("softhsm2-util")
    if util and SOFTHSM.exists():
        (tmp / "tokens").mkdir()
        conf = tmp / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\n"
            "log.level = ERROR\n"
        )
        os.environ["SOFTHSM2_CONF"] = str(conf)
        init = [
            util,
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "87654321",
            "--pin",
            "1234",
        ]
        subprocess.run(init, check=True, capture_output=True)
        hsm = Pkcs11Kek(SOFTHSM, "bench", SecretStr("1234"), create=True)
        providers["pkcs11 (SoftHSM2)"] = hsm
        opened.append(hsm)
    ops: dict[str, Callable[[], object]] = {}
    for name, provider in providers.items():
        kek_id, wrapped = provider.wrap(material, context=context)
        ops[f"unwrap {name}"] = partial(_unwrap, provider, kek_id, wrapped, context)
    cache = _UnwrapCache(size=1024, lifetime=3600, monotonic=time.monotonic)
    cache.put(("t", "p", 1), material)
    ops["cache hit"] = partial(cache.get, ("t", "p", 1))
    return ops, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    recipe = measure(recipe_ops(), args.rounds)
    report("seal/open: tenantguard recipe vs raw AESGCM (same key, same payloads)", recipe)
    for verb in ("seal", "open"):
        for size in ("1KiB", "64KiB"):
            mine = statistics.median(recipe[f"{verb} {size} recipe"])
            raw = statistics.median(recipe[f"{verb} {size} raw"])
            print(f"  {verb} {size}: recipe/raw = {mine / raw:.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        ops, opened = unwrap_ops(Path(tmp))
        unwraps = measure(ops, args.rounds)
        for hsm in opened:
            hsm.close()
    report("getting a data key: unwrap through the KEK vs the unwrap cache", unwraps)
    hit = statistics.median(unwraps["cache hit"])
    for name, values in unwraps.items():
        if name != "cache hit":
            print(f"  {name} / cache hit = {statistics.median(values) / hit:.0f}x")


if __name__ == "__main__":
    main()
