"""Model gateway overhead: `POST /v1/chat/completions` through tenantguard and through LiteLLM's
proxy, both in front of the same local provider stub, against calling the stub directly.

Every control of tenantguard is on: API-key authentication, the request rate limit and a
tokens quota (counted in PostgreSQL), the tenant's own provider and key from the vault, the PII
sentinel on the prompt and the completion (its default policy: strict), the egress guard, and a
durable audit event per call. LiteLLM runs config-only (its database mode needs Prisma engines
that cannot be fetched here), with a master key, one worker, and `LITELLM_LOCAL_MODEL_COST_MAP`.

Three processes serve (the stub, the tenantguard gateway, the LiteLLM proxy); this one drives
them over loopback. Latency: `--requests` sequential calls per target and round, the targets
interleaved for `--rounds` rounds; throughput: `--concurrency` calls in flight for `--seconds`.

Run:
    python3 -m venv .venv-litellm && .venv-litellm/bin/pip install "litellm[proxy]==1.106.2"
    .venv/bin/python benchmarks/gateway.py --litellm .venv-litellm/bin/litellm
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tenantguard.models.stub import serve_forever

MODEL = "bench-model"
PROMPT = "Summarise ticket T-1042: the customer cannot log in since Tuesday, please advise."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float = 60.0, *, any_answer: bool = False) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500 or any_answer:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up in {seconds} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(call: Callable[[httpx.Client], None], client: httpx.Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call(client)
        out.append((time.perf_counter() - start) * 1000)
    return out


def throughput(call: Callable[[httpx.Client], None], concurrency: int, seconds: float) -> float:
    done = [0] * concurrency
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                call(client)
                done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def start_tenantguard(
    root: Path, stub_port: int, procs: list[subprocess.Popen[bytes]]
) -> tuple[str, dict[str, str], float]:
    """A tenantguard gateway (`tenantguard serve`) with one tenant whose provider is the stub:
    its URL, the tenant's headers, and how long it took to be ready."""
    env = {
        **os.environ,
        "TENANTGUARD_DATA_ROOT": str(root),
        "TENANTGUARD_UNSAFE_LOOPBACK_EGRESS": "true",  # the stub is on loopback
        "TENANTGUARD_LOG_LEVEL": "warning",
        # Counted, never in the way: every request passes the rate limit in PostgreSQL.
        "TENANTGUARD_PLATFORM_LIMITS": json.dumps(
            {
                "limits": [
                    {
                        "metric": "requests",
                        "scope": "credential",
                        "per": "minute",
                        "limit": 10_000_000,
                    }
                ]
            }
        ),
    }
    tool = Path(sys.executable).parent / "tenantguard"
    subprocess.run([tool, "init"], env=env, check=True, capture_output=True)
    made = subprocess.run(
        [tool, "tenants", "create", "Bench", "--json"], env=env, check=True, capture_output=True
    )
    h = {"Authorization": f"Bearer {json.loads(made.stdout)['api_key']}"}
    port = free_port()
    started = time.monotonic()
    procs.append(
        subprocess.Popen([tool, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/readyz")
    ready = time.monotonic() - started
    httpx.put(f"{url}/api/secrets/llm", json={"value": "sk-bench"}, headers=h).raise_for_status()
    provider = {
        "kind": "openai_compatible",
        "base_url": f"http://127.0.0.1:{stub_port}/v1",
        "secret": "llm",
        "models": [MODEL],
    }
    httpx.put(f"{url}/api/model-providers/stub", json=provider, headers=h).raise_for_status()
    quota = {"limits": [{"metric": "tokens", "scope": "tenant", "per": "day", "limit": 10**12}]}
    httpx.put(f"{url}/api/admin/quotas", json=quota, headers=h).raise_for_status()
    return f"{url}/v1/chat/completions", h, ready


def start_litellm(
    litellm: str, root: Path, stub_port: int, procs: list[subprocess.Popen[bytes]]
) -> tuple[str, dict[str, str], float]:
    """LiteLLM's proxy, config-only, in front of the same stub."""
    master = "sk-" + secrets.token_hex(16)
    config = root / "litellm.yaml"
    model = {
        "model_name": MODEL,
        "litellm_params": {
            "model": f"openai/{MODEL}",
            "api_base": f"http://127.0.0.1:{stub_port}/v1",
            "api_key": "sk-bench",
        },
    }
    config.write_text(
        json.dumps({"model_list": [model], "general_settings": {"master_key": master}})
    )
    port = free_port()
    started = time.monotonic()
    command = [
        litellm,
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    procs.append(
        subprocess.Popen(
            command,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_for(f"http://127.0.0.1:{port}/health/liveliness", 180)
    ready = time.monotonic() - started
    return (
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"Authorization": f"Bearer {master}"},
        ready,
    )


def caller(url: str, headers: dict[str, str]) -> Callable[[httpx.Client], None]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}

    def call(client: httpx.Client) -> None:
        answer = client.post(url, json=body, headers=headers)
        if answer.status_code != 200:
            raise SystemExit(f"{url}: {answer.status_code} {answer.text[:300]}")

    return call


def report(
    samples: dict[str, list[float]],
    rps: dict[str, float],
    starts: dict[str, float],
    args: argparse.Namespace,
) -> None:
    base = {q: percentile(samples["direct stub"], q) for q in (0.5, 0.95, 0.99)}
    print(
        f"\n{args.rounds} rounds x {args.requests} sequential calls per target, interleaved;"
        f" {args.concurrency} in flight for {args.seconds:.0f} s\n"
    )
    print("| target | p50 ms | p95 ms | p99 ms | added p50 | added p99 | RPS |")
    print("|---|---|---|---|---|---|---|")
    for name, values in samples.items():
        p = {q: percentile(values, q) for q in (0.5, 0.95, 0.99)}
        print(
            f"| {name} | {p[0.5]:.2f} | {p[0.95]:.2f} | {p[0.99]:.2f} | "
            f"+{p[0.5] - base[0.5]:.2f} | +{p[0.99] - base[0.99]:.2f} | {rps[name]:.0f} |"
        )
    direct = statistics.median(samples["direct stub"])
    if "litellm proxy" in samples:
        ours = statistics.median(samples["tenantguard"]) - direct
        theirs = statistics.median(samples["litellm proxy"]) - direct
        print(
            f"\nadded p50: tenantguard {ours:.2f} ms, LiteLLM {theirs:.2f} ms"
            f" (ratio {ours / theirs:.2f})"
        )
    print("start-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in starts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--litellm", help="the litellm executable (its own venv)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve-stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_forever(args.serve_stub)
        return
    procs: list[subprocess.Popen[bytes]] = []
    root = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    stub_port = free_port()
    try:
        procs.append(subprocess.Popen([sys.executable, __file__, "--serve-stub", str(stub_port)]))
        wait_for(f"http://127.0.0.1:{stub_port}/", any_answer=True)  # it serves POST only
        direct = f"http://127.0.0.1:{stub_port}/v1/chat/completions"
        targets: dict[str, tuple[str, dict[str, str]]] = {"direct stub": (direct, {})}
        url, headers, ready = start_tenantguard(root, stub_port, procs)
        targets["tenantguard"] = (url, headers)
        starts = {"tenantguard": ready}
        if args.litellm:
            url, headers, ready = start_litellm(args.litellm, root, stub_port, procs)
            targets["litellm proxy"] = (url, headers)
            starts["LiteLLM"] = ready
        for url, headers in targets.values():  # warm up each
            with httpx.Client(timeout=30) as client:
                latency(caller(url, headers), client, 20)
        samples: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, headers) in targets.items():
                with httpx.Client(timeout=30) as client:
                    samples[name] += latency(caller(url, headers), client, args.requests)
        rps = {
            name: throughput(caller(url, headers), args.concurrency, args.seconds)
            for name, (url, headers) in targets.items()
        }
        report(samples, rps, starts, args)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
