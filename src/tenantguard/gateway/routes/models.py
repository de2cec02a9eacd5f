"""`POST /v1/chat/completions`: OpenAI's chat completions, routed to the calling tenant's own
model provider (strict BYOK: its own, or one shared with it by an audited grant, or a
`model_provider_missing` problem; never a shared pool).

One call, in order:

1. the credential holds `models:call` (and the request was counted, by `Authorize`);
2. a run named by `X-Tenantguard-Run` must be one the credential sees, and not stopped;
3. nothing is left of a token or spend budget: refused before anything leaves (a model's cost
   is known only afterwards, so a budget is probed here and charged after);
4. the prompt's messages are redacted by the tenant's PII policy for the `prompt` channel;
5. the provider is called through the egress guard under the tenant's egress policy (a
   private endpoint, Ollama or vLLM, needs the tenant's egress grant);
6. the completion is redacted for the `completion` channel; reversible tokens of this prompt
   are restored when the credential holds `pii:reidentify`;
7. the tokens and the spend are charged (a run whose budget this used up is stopped), and the
   call is audited with SHA-256 hashes of the prompt as sent and of the completion, never
   their text. The response is released only after that audit is written.

A stream is audited twice: when it starts (before the first byte, fail closed) and when it
ends, with the completion's hash and the usage.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal
from uuid import UUID

import httpx
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.data import egress as egress_store
from tenantguard.data import model_providers, runs
from tenantguard.data.model_providers import ANTHROPIC_KINDS, ResolvedModel
from tenantguard.db.pool import Connection
from tenantguard.egress.check import EgressDenied, EgressPolicy
from tenantguard.egress.transport import egress_client
from tenantguard.errors import BudgetExhausted, Conflict, TenantGuardError
from tenantguard.gateway.auth import Authorize, subject_of
from tenantguard.gateway.runtime import Runtime, runtime
from tenantguard.models.chat import (
    ANTHROPIC_VERSION,
    ChatRequest,
    Completion,
    ProviderFailed,
    TokenRestorer,
    Usage,
    anthropic_body,
    anthropic_events,
    chunk,
    openai_body,
    openai_events,
    parse_anthropic,
    parse_openai,
    sse_data,
)
from tenantguard.pii.sentinel import Redacted
from tenantguard.quotas.core import Subject

router = APIRouter(tags=["models"])
MODEL_TIMEOUT = 300.0  # seconds for a whole call, a stream included (the guard's one deadline)
MODEL_MAX_BYTES = 16 * 1024 * 1024
Call = Annotated[TenantContext, Depends(Authorize("models:call"))]
RunHeader = Annotated[UUID | None, Header(alias="X-Tenantguard-Run")]


class PriceUnknown(Conflict):
    code = "model_price_unknown"
    title = "Model price unknown"
    default_detail = "A spend limit applies to this call and the model has no price (model_prices)."


def _digest(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _endpoint(resolved: ResolvedModel) -> tuple[str, dict[str, str]]:
    key = resolved.api_key.get_secret_value() if resolved.api_key is not None else None
    if resolved.kind in ANTHROPIC_KINDS:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key is not None:
            headers["x-api-key"] = key
        return f"{resolved.base_url}/v1/messages", headers
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return f"{resolved.base_url}/chat/completions", headers


class _Call:
    """What one model call carries from its checks to its settlement."""

    def __init__(
        self, rt: Runtime, ctx: TenantContext, body: ChatRequest, run: runs.Run | None
    ) -> None:
        self.rt, self.ctx, self.body, self.run = rt, ctx, body, run
        self.subject: Subject = subject_of(
            ctx,
            agent=run.agent if run is not None else None,
            run=str(run.id) if run is not None else None,
        )
        self.conversation = f"run:{run.id}" if run is not None else f"request:{ctx.request_id}"
        self.price = rt.prices.get(body.model)

    def probe(self, tx: Connection) -> tuple[str, BudgetExhausted] | None:
        """The token or spend budget with nothing left, and its refusal (charges nothing),
        read in `tx`; the caller stops the run (`stop`) once `tx` is done, then raises."""
        meter, tenant = self.rt.meter, self.ctx.tenant_id
        if self.price is None and meter.checks(tenant, "spend", self.subject, conn=tx):
            raise PriceUnknown()
        for metric in ("tokens", "spend"):
            try:
                meter.charge(tenant, metric, self.subject, cost=0, conn=tx)
            except BudgetExhausted as refused:
                return metric, refused
        return None

    def stop(self, reason: str) -> None:
        if self.run is not None:
            with self.rt.db.tenant_transaction(self.ctx.tenant_id) as tx:
                runs.stop_run(tx, self.ctx, self.run.id, reason=reason, now=self.rt.clock.now())

    def _settle(self, tx: Connection, usage: Usage) -> None:
        """Charge what the call used, whatever the limits say now (it happened), in `tx`."""
        spend = self.price.spend(usage) if self.price is not None else 0
        exhausted: list[str] = []
        for metric, cost in (("tokens", usage.total), ("spend", spend)):
            verdict = self.rt.meter.charge(
                self.ctx.tenant_id,
                metric,  # type: ignore[arg-type]
                self.subject,
                cost=cost,
                force=True,
                conn=tx,
            )
            if verdict.run_budget_used_up:
                exhausted.append(metric)
        if exhausted and self.run is not None:
            reason = f"budget_exhausted:{exhausted[0]}"
            runs.stop_run(tx, self.ctx, self.run.id, reason=reason, now=self.rt.clock.now())

    def audit(
        self,
        action: str,
        outcome: Literal["success", "failure", "denied"],
        reason: str = "",
        *,
        usage: Usage | None = None,
        **payload: Any,
    ) -> None:
        """Audit the call; with `usage`, charge it in the same transaction (one commit: the
        count and the record of it stand or fall together)."""
        with self.rt.db.tenant_transaction(self.ctx.tenant_id) as tx:
            if usage is not None:
                self._settle(tx, usage)
            record_action(
                tx,
                self.ctx,
                action=action,
                target_type="model",
                target_id=self.body.model,
                now=self.rt.clock.now(),
                outcome=outcome,
                reason=reason,
                payload={"run_id": str(self.run.id) if self.run else None, **payload},
            )


@dataclass
class _Prepared:
    call: _Call
    upstream: dict[str, Any]
    url: str
    headers: dict[str, str]
    anthropic: bool
    restorer: TokenRestorer
    facts: dict[str, Any]
    egress: EgressPolicy


def _prepare(rt: Runtime, ctx: TenantContext, body: ChatRequest, run_id: UUID | None) -> _Prepared:
    """Steps 2 to 4: the run, the budgets, the tenant's provider, the redacted prompt."""
    # The reads, and the tenant's own provider with its key, in one transaction.
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        run = runs.get_run(tx, ctx, run_id) if run_id is not None else None
        if run is not None and run.status == "stopped":
            raise runs.RunStopped()
        egress = egress_store.policy_for(tx, ctx.tenant_id, rt.egress)
        call = _Call(rt, ctx, body, run)
        exhausted = call.probe(tx)
        own = None
        if exhausted is None:
            now = rt.clock.now()
            own = model_providers.resolve_own(
                tx, ctx, rt.keyring, body.model, now=now, recent=rt.secret_reads
            )
    if exhausted is not None:
        metric, refused = exhausted
        call.stop(f"budget_exhausted:{metric}")
        raise refused
    if own is not None:
        rt.secret_reads.mark(own.audited)
    resolved = own or model_providers.resolve_shared(
        rt.db, ctx, rt.keyring, body.model, now=rt.clock.now()
    )
    texts = [m.text() for m in body.messages]
    # Text with nothing to find passes as it is, whatever the policy: no transaction for it.
    if any(rt.sentinel.scan(text) for text in texts):
        redacted = rt.sentinel.redact_many(
            ctx, texts, channel="prompt", conversation=call.conversation
        )
    else:
        redacted = [Redacted(text, [], 0) for text in texts]
    originals = {
        f.token: text[f.start : f.end]
        for text, r in zip(texts, redacted, strict=True)
        for f in r.findings
        if f.mode == "reversible" and f.token is not None
    }
    messages = [
        {**m.model_dump(exclude_none=True, exclude={"content"}), "content": r.text}
        for m, r in zip(body.messages, redacted, strict=True)
    ]
    anthropic = resolved.kind in ANTHROPIC_KINDS
    upstream = anthropic_body(body, messages) if anthropic else openai_body(body, messages)
    url, headers = _endpoint(resolved)
    facts: dict[str, Any] = {
        "provider": resolved.provider,
        "shared": resolved.shared,
        "key_version": resolved.key_version,
        "prompt_sha256": _digest(upstream),
        "redacted": sum(len(r.findings) for r in redacted),
    }
    restorer = TokenRestorer(originals if ctx.allows("pii:reidentify") else {})
    return _Prepared(call, upstream, url, headers, anthropic, restorer, facts, egress)


class ModelClients:
    """The egress clients of model calls, one per (tenant, egress policy), kept so that a
    tenant's calls reuse their connections (a new TLS connection per call would cost a
    handshake each time). Never shared between tenants. Past `size`, the least recently used
    is retired, and closed only once `MODEL_TIMEOUT` has passed: every call (a stream
    included) ends within that deadline, so none is cut. A changed policy is a new key."""

    def __init__(self, size: int = 256, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._size, self._clock = size, clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[tuple[UUID, EgressPolicy], httpx.Client] = OrderedDict()
        self._retired: list[tuple[float, httpx.Client]] = []

    def get(self, tenant_id: UUID, policy: EgressPolicy) -> httpx.Client:
        key = (tenant_id, policy)
        now = self._clock()
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                bounded = replace(
                    policy, timeout_seconds=MODEL_TIMEOUT, max_response_bytes=MODEL_MAX_BYTES
                )
                client = egress_client(bounded, follow_redirects=False)
                self._clients[key] = client
            self._clients.move_to_end(key)
            while len(self._clients) > self._size:
                self._retired.append((now, self._clients.popitem(last=False)[1]))
            done = [c for at, c in self._retired if now - at > MODEL_TIMEOUT]
            self._retired = [(at, c) for at, c in self._retired if now - at <= MODEL_TIMEOUT]
        for old in done:
            old.close()
        return client

    def close(self) -> None:
        with self._lock:
            clients = [*self._clients.values(), *(c for _, c in self._retired)]
            self._clients.clear()
            self._retired.clear()
        for client in clients:
            client.close()


def _open(p: _Prepared) -> httpx.Response:
    """Step 5: the provider's answer, its head at least; a failure is audited and a 502."""
    client = p.call.rt.model_clients.get(p.call.ctx.tenant_id, p.egress)
    try:
        outbound = client.build_request("POST", p.url, json=p.upstream, headers=p.headers)
        response = client.send(outbound, stream=True)
    except httpx.HTTPError as exc:
        p.call.audit("model.call", "failure", "provider_unreachable", **p.facts)
        raise ProviderFailed("The tenant's model provider could not be reached.") from exc
    except TenantGuardError as refused:  # the egress guard's refusal, named by its rule
        why = f"egress:{refused.rule}" if isinstance(refused, EgressDenied) else refused.code
        p.call.audit("model.call", "denied", why, **p.facts)
        raise
    if response.status_code >= 400:
        response.close()
        why = f"provider_status:{response.status_code}"
        p.call.audit("model.call", "failure", why, **p.facts)
        raise ProviderFailed(f"The tenant's model provider answered {response.status_code}.")
    return response


@router.post("/v1/chat/completions", response_model=None)
def chat_completions(
    body: ChatRequest, ctx: Call, request: Request, run_id: RunHeader = None
) -> Response:
    rt = runtime(request)
    p = _prepare(rt, ctx, body, run_id)
    response = _open(p)
    if body.stream:
        try:
            p.call.audit("model.stream", "success", **p.facts)
        except TenantGuardError:
            response.close()
            raise
        return StreamingResponse(
            _relay(p, response),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )
    try:
        document = json.loads(response.read())
    except (ValueError, httpx.HTTPError, TenantGuardError) as exc:
        p.call.audit("model.call", "failure", "provider_unreadable", **p.facts)
        raise ProviderFailed() from exc
    finally:
        response.close()
    completion = (parse_anthropic if p.anthropic else parse_openai)(document, body.model)
    text = completion.text
    if rt.sentinel.scan(text):
        text = rt.sentinel.redact(
            ctx, text, channel="completion", conversation=p.call.conversation
        ).text
    text = p.restorer.feed(text) + p.restorer.finish()
    p.call.audit(
        "model.call",
        "success",
        usage=completion.usage,
        **p.facts,
        completion_sha256=_digest(completion.text),
        tokens=completion.usage.as_json(),
        restored=p.restorer.restored,
    )
    answer = Completion(
        text, completion.finish_reason, completion.usage, completion.id, completion.model
    )
    return JSONResponse(answer.as_openai(), headers={"Cache-Control": "no-store"})


def _relay(p: _Prepared, response: httpx.Response) -> Iterator[str]:
    """The provider's stream as OpenAI chunks: redacted across chunk boundaries for the
    completion channel, tokens restored, usage charged and the end audited before `[DONE]`."""
    call, restorer, facts, anthropic = p.call, p.restorer, p.facts, p.anthropic
    body, rt, ctx = call.body, call.rt, call.ctx
    created = int(time.time())
    completion_id = f"chatcmpl-{ctx.request_id}"
    redactor = rt.sentinel.stream_redactor(
        ctx, channel="completion", conversation=call.conversation
    )
    seen: list[str] = []
    usage = Usage()
    finish: str | None = None
    outcome: Literal["success", "failure", "denied"] = "failure"
    reason = "stream_broken"
    try:
        yield chunk(completion_id, body.model, created, role="assistant", content="")
        events = (anthropic_events if anthropic else openai_events)(sse_data(response.iter_lines()))
        for event in events:
            if event.usage is not None:
                usage = event.usage
            finish = event.finish_reason or finish
            if event.text:
                seen.append(event.text)
                out = restorer.feed(redactor.feed(event.text))
                if out:
                    yield chunk(completion_id, body.model, created, content=out)
        tail = restorer.feed(redactor.finish()) + restorer.finish()
        if tail:
            yield chunk(completion_id, body.model, created, content=tail)
        yield chunk(completion_id, body.model, created, finish_reason=finish or "stop")
        if body.stream_options is not None and body.stream_options.include_usage:
            yield chunk(completion_id, body.model, created, usage=usage.as_json())
        outcome, reason = "success", ""
    except (httpx.HTTPError, TenantGuardError):
        yield 'data: {"error":{"type":"provider_failed","message":"The stream broke."}}\n\n'
    finally:
        response.close()
        call.audit(
            "model.call",
            outcome,
            reason,
            usage=usage,
            **facts,
            completion_sha256=_digest("".join(seen)),
            tokens=usage.as_json(),
            restored=restorer.restored,
        )
    yield "data: [DONE]\n\n"
