"""Outputs, connections and the outbox in memory."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import msgspec

from patchbay.backends.records import (
    Circuit,
    Connection,
    Delivery,
    DuplicateName,
    Output,
    QueueStats,
)

_replace = msgspec.structs.replace


class MemoryOutbox:
    """Outputs, connections and deliveries in dicts (one object for both interfaces)."""

    def __init__(self) -> None:
        self._outputs: dict[str, Output] = {}
        self._connections: dict[str, Connection] = {}
        self._deliveries: dict[str, Delivery] = {}
        #: Delivery id -> its owner and the end of its lease.
        self._leases: dict[str, tuple[str, int]] = {}
        self._circuits: dict[str, Circuit] = {}
        self._lock = threading.Lock()

    # -- outputs and connections

    def add_output(self, output: Output) -> None:
        """Create ``output``."""
        with self._lock:
            if output.name in self._outputs:
                raise DuplicateName(f"an output named {output.name!r} already exists")
            self._outputs[output.name] = output

    def get_output(self, name: str) -> Output | None:
        """The output with this name."""
        with self._lock:
            return self._outputs.get(name)

    def list_outputs(self) -> list[Output]:
        """Every output, by name."""
        with self._lock:
            return [self._outputs[n] for n in sorted(self._outputs)]

    def set_paused(self, name: str, paused: bool, reason: str | None, now_ms: int) -> bool:
        """Pause or resume an output; whether it exists."""
        with self._lock:
            if (found := self._outputs.get(name)) is None:
                return False
            self._outputs[name] = _replace(
                found, paused=paused, paused_reason=reason if paused else None, updated_at_ms=now_ms
            )
            return True

    def set_circuit(self, name: str, circuit: Circuit) -> None:
        """Record the state of an output's circuit breaker."""
        with self._lock:
            self._circuits[name] = circuit

    def circuits(self) -> dict[str, Circuit]:
        """The recorded circuit breaker of every output that has one."""
        with self._lock:
            return dict(self._circuits)

    def add_connection(self, connection: Connection) -> None:
        """Create ``connection``."""
        with self._lock:
            for c in self._connections.values():
                if (c.input_id, c.output) == (connection.input_id, connection.output):
                    raise DuplicateName(f"the input is already connected to {c.output!r}")
            if connection.id in self._connections:
                raise DuplicateName(f"a connection {connection.id!r} already exists")
            self._connections[connection.id] = connection

    def list_connections(self) -> list[Connection]:
        """Every connection, by input then output."""
        with self._lock:
            return sorted(self._connections.values(), key=lambda c: (c.input_id, c.output))

    def remove_connection(self, connection_id: str) -> bool:
        """Remove a connection; whether it existed."""
        with self._lock:
            return self._connections.pop(connection_id, None) is not None

    # -- deliveries

    def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        """Add the deliveries whose id is new."""
        added = 0
        with self._lock:
            for d in deliveries:
                if d.id not in self._deliveries:
                    self._deliveries[d.id] = d
                    added += 1
        return added

    def due(
        self,
        output: str,
        now_ms: int,
        limit: int,
        exclude: Sequence[str] = (),
        owner: str | None = None,
        lease_ms: int = 0,
    ) -> list[Delivery]:
        """Pending deliveries of ``output`` due at ``now_ms``, oldest due first, but those
        in ``exclude`` and those another owner holds; leased to ``owner``."""
        skip = set(exclude)
        with self._lock:
            found = [
                d
                for d in self._deliveries.values()
                if d.output == output
                and d.state == "pending"
                and d.next_attempt_ms <= now_ms
                and d.id not in skip
                and self._free(d.id, owner, now_ms)
            ]
            found.sort(key=lambda d: (d.next_attempt_ms, d.created_at_ms, d.id))
            found = found[: max(limit, 0)]
            if owner is not None:
                for d in found:
                    self._leases[d.id] = (owner, now_ms + lease_ms)
        return found

    def _free(self, delivery_id: str, owner: str | None, now_ms: int) -> bool:
        """Whether no owner but ``owner`` holds the delivery at ``now_ms`` (no ``owner``:
        a look, whoever holds it)."""
        lease = self._leases.get(delivery_id)
        return owner is None or lease is None or lease[0] == owner or lease[1] <= now_ms

    def _release(self, delivery_id: str, owner: str | None) -> bool:
        """End the delivery's lease unless another owner holds it; whether it did."""
        lease = self._leases.get(delivery_id)
        if owner is not None and lease is not None and lease[0] != owner:
            return False
        self._leases.pop(delivery_id, None)
        return True

    def succeeded(self, delivery_id: str, owner: str | None = None) -> None:
        """Remove a delivery that was accepted."""
        self.succeeded_many((delivery_id,), owner)

    def succeeded_many(self, delivery_ids: Sequence[str], owner: str | None = None) -> None:
        """Remove deliveries that were accepted."""
        with self._lock:
            for delivery_id in delivery_ids:
                if self._release(delivery_id, owner):
                    self._deliveries.pop(delivery_id, None)

    def retry_at(
        self,
        delivery_id: str,
        attempts: int,
        next_attempt_ms: int,
        error: str,
        owner: str | None = None,
    ) -> None:
        """Record a failed attempt and when to try again."""
        with self._lock:
            found = self._deliveries.get(delivery_id)
            if found is not None and found.state == "pending" and self._release(delivery_id, owner):
                self._deliveries[delivery_id] = _replace(
                    found, attempts=attempts, next_attempt_ms=next_attempt_ms, last_error=error
                )

    def park(
        self, delivery_id: str, attempts: int, error: str, now_ms: int, owner: str | None = None
    ) -> None:
        """Give up on a delivery for now."""
        with self._lock:
            found = self._deliveries.get(delivery_id)
            if found is not None and self._release(delivery_id, owner):
                self._deliveries[delivery_id] = _replace(
                    found, state="parked", attempts=attempts, last_error=error, parked_at_ms=now_ms
                )

    def parked(self, output: str | None = None, limit: int = 1000) -> list[Delivery]:
        """Parked deliveries, oldest first."""
        with self._lock:
            found = [
                d
                for d in self._deliveries.values()
                if d.state == "parked" and output in (None, d.output)
            ]
        found.sort(key=lambda d: (d.parked_at_ms or 0, d.created_at_ms))
        return found[:limit]

    def replay(self, now_ms: int, output: str | None = None, ids: Sequence[str] = ()) -> int:
        """Make parked deliveries pending again, due now, with a new retry window."""
        wanted = set(ids)
        count = 0
        with self._lock:
            for d in list(self._deliveries.values()):
                if d.state != "parked" or output not in (None, d.output):
                    continue
                if wanted and d.id not in wanted:
                    continue
                self._deliveries[d.id] = _replace(
                    d,
                    state="pending",
                    next_attempt_ms=now_ms,
                    since_ms=now_ms,
                    attempts=0,
                    parked_at_ms=None,
                )
                count += 1
        return count

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        with self._lock:
            return self._deliveries.get(delivery_id)

    def stats(self) -> dict[str, QueueStats]:
        """Queue statistics by output."""
        counts: dict[str, list[int]] = {}
        oldest: dict[str, int] = {}
        with self._lock:
            for d in self._deliveries.values():
                entry = counts.setdefault(d.output, [0, 0])
                if d.state == "pending":
                    entry[0] += 1
                    oldest[d.output] = min(oldest.get(d.output, d.created_at_ms), d.created_at_ms)
                else:
                    entry[1] += 1
        return {
            o: QueueStats(pending=p, parked=k, oldest_pending_ms=oldest.get(o))
            for o, (p, k) in counts.items()
        }

    def close(self) -> None:
        """Nothing to release."""
