"""Publishing signed checkpoints to a NATS JetStream subject: a second witness outside the
database and the gateway's disk, for operators who run a stream.

Each checkpoint note is published to `<subject prefix>.<tenant id>` with `Nats-Msg-Id` set to
the checkpoint's id (JetStream drops a duplicate of a retried publish), and the publish counts
only once the stream acknowledged it. When a publisher is configured, a checkpoint that was not
acknowledged is not stored (like one that could not be written to the witness directory).

Threat stopped: an insider who controls the database and the gateway's host rewriting history
together with every copy of its checkpoints.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import nats
from nats.errors import Error as NatsError

from tenantguard.errors import AuditUnavailable


class JetStreamPublisher:
    """Publishes one note per call, on a connection of its own (checkpoints are minutes apart:
    nothing is kept open between them)."""

    def __init__(self, url: str, *, subject_prefix: str, timeout: float = 5.0) -> None:
        self._url, self._prefix, self._timeout = url, subject_prefix, timeout

    def subject(self, tenant_id: UUID) -> str:
        return f"{self._prefix}.{tenant_id}"

    def publish(self, tenant_id: UUID, checkpoint_id: UUID, note: str) -> int:
        """Publish `note`; the stream's sequence number once acknowledged."""
        try:
            return asyncio.run(self._publish(tenant_id, checkpoint_id, note))
        except (NatsError, OSError, TimeoutError) as exc:
            raise AuditUnavailable("The checkpoint could not be published.") from exc

    async def _publish(self, tenant_id: UUID, checkpoint_id: UUID, note: str) -> int:
        client = await nats.connect(
            self._url,
            connect_timeout=self._timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
        try:
            ack = await client.jetstream().publish(
                self.subject(tenant_id),
                note.encode(),
                timeout=self._timeout,
                headers={"Nats-Msg-Id": str(checkpoint_id)},
            )
        finally:
            await client.close()
        return int(ack.seq)
