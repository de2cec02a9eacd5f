"""Access-token verification: tenantguard's `tokens.verify` against a raw Ed25519 verify.

Both check the same token. `tokens.verify` parses and checks the header (algorithm, type, kid
form, no key-carrying members), verifies the signature through joserfc with the algorithm
pinned, and checks every claim against the clock; the raw variant only splits the token and
calls `Ed25519PublicKey.verify` from `cryptography` on the signing input. The session check
(one indexed query per request) is not included: it is a database round trip, measured by
`rls_overhead.py`'s transactions.

Interleaved rounds, medians and p95/p99, one ratio. Run:
`.venv/bin/python benchmarks/tokens.py [--rounds 5000]`
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from uuid import uuid4

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tenantguard.crypto.signing import PublicKey, SigningKey, thumbprint
from tenantguard.identity import tokens
from tenantguard.settings import TokenConfig


def _raw_verify(public: Ed25519PublicKey, token: str) -> None:
    head, _, signature = token.rpartition(".")
    public.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), head.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    private = Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes_raw()
    kid = thumbprint(raw_public)
    now = datetime.now(UTC)
    config = TokenConfig(issuer="tenantguard", audience="tenantguard-api")
    token = tokens.issue(
        SigningKey(kid, private),
        config,
        subject=uuid4(),
        tenant_id=uuid4(),
        session_id=uuid4(),
        capabilities=frozenset({"memory:read", "runs:write"}),
        role="member",
        auth_time=now,
        amr=("email", "otp"),
        now=now,
    )
    key = PublicKey(kid, raw_public, now, None)
    ops: dict[str, Callable[[], object]] = {
        "tokens.verify": partial(
            tokens.verify, token, config, key_for=lambda k: key if k == kid else None, now=now
        ),
        "raw Ed25519 verify": partial(_raw_verify, private.public_key(), token),
    }
    names = list(ops)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(500):
        for name in names:
            ops[name]()
    for round_no in range(args.rounds):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            started = time.perf_counter()
            ops[name]()
            samples[name].append((time.perf_counter() - started) * 1e6)
    print(f"token of {len(token)} bytes, {args.rounds} interleaved rounds")
    print(f"{'variant':<22}{'p50 us':>10}{'p95 us':>10}{'p99 us':>10}")
    for name, values in samples.items():
        ordered = sorted(values)
        print(
            f"{name:<22}{statistics.median(values):>10.1f}"
            f"{ordered[int(0.95 * len(ordered))]:>10.1f}{ordered[int(0.99 * len(ordered))]:>10.1f}"
        )
    ours, raw = (statistics.median(samples[n]) for n in names)
    print(f"tokens.verify / raw Ed25519 verify = {ours / raw:.2f}x")


if __name__ == "__main__":
    main()
