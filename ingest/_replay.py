"""Replaying dead letters: each stored payload goes back to its own topic at QoS 1, and is marked replayed only
after the broker's PUBACK.

At-least-once: a crash between the PUBACK and the mark sends the payload again on the next replay, and ingest's
write is idempotent (a reading is its machine and timestamp), so the second copy lands on the same row. Under MQTT 5
a PUBACK that says "no matching subscribers" (nobody, not even ingest's persistent session, will get it) or carries
an error code counts as failed and leaves the dead letter pending.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from psycopg import sql

from ingest._dead_letters import (
    DeadLetterError,
    DeadLetterFilter,
    StoredDeadLetter,
    dead_letter_columns,
    dead_letter_of,
    select_list,
)
from ingest._mqtt import BrokerError
from wearline.db import connect
from wearline.settings import MqttSettings, Settings

__all__ = ["PAYLOAD_REASONS", "ReplayCounts", "replay_dead_letters"]

log = logging.getLogger(__name__)

_NO_MATCHING_SUBSCRIBERS = 0x10


PAYLOAD_REASONS = ("not_json", "bad_schema", "non_finite", "bad_topic", "conflict")
"""Refusals of the payload itself: no registry entry, setting or clock fix changes how ingest judges it again, so a
replay sends these only when its ``--reason`` names them."""


@dataclass
class ReplayCounts:
    """What a replay did: ``replayed`` acknowledged and marked, ``truncated`` skipped (only part of the payload was
    kept), ``failed`` refused or unacknowledged (still pending), ``unfixable`` pending refusals of the payload itself
    (:data:`PAYLOAD_REASONS`) left alone because the filter did not name their reason. With ``dry_run`` nothing
    was sent or marked."""

    replayed: int = 0
    truncated: int = 0
    failed: int = 0
    unfixable: int = 0
    dry_run: bool = False
    failures: dict[str, int] | None = None
    stopped: str | None = None
    """Why the replay stopped before the end of the selection (the broker connection was lost), or None."""

    def fail(self, why: str, n: int = 1) -> None:
        self.failed += n
        self.failures = self.failures or {}
        self.failures[why] = self.failures.get(why, 0) + n


class _Publisher:
    """A paho client on its own network thread; :meth:`publish` resolves with the PUBACK's verdict."""

    def __init__(self, settings: MqttSettings, loop: asyncio.AbstractEventLoop, window: int) -> None:
        self._s = settings
        self._loop = loop
        self._v5 = settings.protocol == "5"
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[str | None]] = {}
        self._early: dict[int, str | None] = {}
        self._connected: asyncio.Future[str | None] = loop.create_future()
        self._lost: str | None = None
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{settings.client_id}-replay-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else True,
            reconnect_on_failure=False,
        )
        if settings.username is not None:
            client.username_pw_set(
                settings.username, settings.password.get_secret_value() if settings.password else None
            )
        if settings.tls:
            client.tls_set_context(settings.ssl_context())
        client.connect_timeout = settings.connect_timeout_s
        client.max_inflight_messages_set(window)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        self._client = client

    def _settle(self, fut: asyncio.Future[str | None], verdict: str | None) -> None:
        def set_it() -> None:
            if not fut.done():
                fut.set_result(verdict)

        self._loop.call_soon_threadsafe(set_it)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._settle(self._connected, str(reason) if reason.is_failure else None)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            verdict: str | None = f"broker refused: {reason}"
        elif self._v5 and reason.value == _NO_MATCHING_SUBSCRIBERS:
            verdict = "no subscriber (is ingest running, or its session alive?)"
        else:
            verdict = None
        with self._lock:
            fut = self._pending.pop(mid, None)
            if fut is None:
                # The PUBACK beat publish() returning its mid.
                self._early[mid] = verdict
                return
        self._settle(fut, verdict)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._lost = f"connection lost: {reason}"
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for fut in pending:
            self._settle(fut, self._lost)
        self._settle(self._connected, self._lost)

    @property
    def lost(self) -> str | None:
        """Why the connection dropped, once it has."""
        return self._lost

    async def __aenter__(self) -> _Publisher:
        s = self._s
        where = f"{s.host}:{s.port}"
        try:
            await asyncio.to_thread(self._client.connect, s.host, s.port, s.keepalive_s)
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot connect to the broker at {where} to replay: {exc}") from exc
        self._client.loop_start()
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                refused = await self._connected
        except TimeoutError:
            refused = f"no CONNACK within {s.connect_timeout_s} s"
        if refused is not None:
            await self.__aexit__()
            raise BrokerError(f"the broker at {where} refused the replay connection: {refused}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self._client.disconnect)
        await asyncio.to_thread(self._client.loop_stop)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[str | None]:
        """Send at QoS 1; the future holds None once the broker has taken it, else why not."""
        fut: asyncio.Future[str | None] = self._loop.create_future()
        if self._lost is not None:
            fut.set_result(self._lost)
            return fut
        # Not under self._lock: paho calls on_publish holding its own message lock, which publish() takes too.
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            fut.set_result(f"not sent: {paho.error_string(info.rc)}")
            return fut
        with self._lock:
            if info.mid in self._early:
                fut.set_result(self._early.pop(info.mid))
            else:
                self._pending[info.mid] = fut
        return fut


async def _pending_page(
    conn: psycopg.AsyncConnection[Any], query: sql.Composed, args: list[Any], after: int
) -> list[StoredDeadLetter]:
    cur = await conn.execute(query, [after, *args])
    return [dead_letter_of(r) for r in await cur.fetchall()]


async def replay_dead_letters(
    settings: Settings,
    filt: DeadLetterFilter,
    *,
    dry_run: bool = False,
    window: int = 100,
    puback_timeout_s: float = 30.0,
    progress: Callable[[ReplayCounts], None] | None = None,
) -> ReplayCounts:
    """Re-publish every pending dead letter that ``filt`` selects, oldest first, ``window`` at a time in flight.

    A dead letter is marked replayed (``replayed_at``) in the transaction right after its PUBACK; one whose
    payload was truncated is counted and left alone. Stops at the first lost connection, counting what was in
    flight as failed. Raises :class:`BrokerError` when the broker cannot be reached at all.
    """
    schema = settings.database.schema_name
    counts = ReplayCounts(dry_run=dry_run)
    loop = asyncio.get_running_loop()
    async with await connect(settings.database) as conn:
        cols = await dead_letter_columns(conn, schema)
        if not cols.replayed_at:
            raise DeadLetterError(f"schema {schema!r} cannot mark replayed dead letters yet: run `wearline db migrate`")
        where, args = filt.where(settings.topic_prefix)
        if not filt.reasons:
            # Re-sending a payload ingest refused for what it is would only make a new dead letter of it.
            cur = await conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL AND reason = ANY(%s) AND {}"
                ).format(where),
                [list(PAYLOAD_REASONS), *args],
            )
            counts.unfixable = int((await cur.fetchone() or [0])[0])
            where = sql.SQL("{} AND reason <> ALL({})").format(where, sql.Literal(list(PAYLOAD_REASONS)))
        # Keyset pages in id order, up to the newest id when the run starts: a replayed payload that ingest
        # refuses again becomes a new dead letter with a higher id, which this run must not send back once more.
        cur = await conn.execute("SELECT coalesce(max(dead_letter_id), 0) FROM dead_letters")
        last_id = int((await cur.fetchone() or [0])[0])
        query = sql.SQL(
            "SELECT {} FROM dead_letters WHERE replayed_at IS NULL AND dead_letter_id > %s AND dead_letter_id <= {}"
            " AND {} ORDER BY dead_letter_id LIMIT {}"
        ).format(select_list(cols, payload=True), sql.Literal(last_id), where, sql.Literal(window))
        publisher = None if dry_run else await _Publisher(settings.mqtt, loop, window).__aenter__()
        try:
            after = 0
            while page := await _pending_page(conn, query, args, after):
                await conn.commit()  # no transaction held open while the broker answers
                after = page[-1].dead_letter_id
                sendable = [d for d in page if not d.truncated]
                counts.truncated += len(page) - len(sendable)
                if publisher is None:
                    counts.replayed += len(sendable)
                    continue
                futures = [publisher.publish(d.topic, d.payload or b"") for d in sendable]
                # asyncio.wait, not a timeout around gather: that would cancel the futures whose PUBACK came in time.
                if futures:
                    await asyncio.wait(futures, timeout=puback_timeout_s)
                verdicts = [f.result() if f.done() else f"no PUBACK within {puback_timeout_s:g} s" for f in futures]
                done = [d.dead_letter_id for d, v in zip(sendable, verdicts, strict=True) if v is None]
                for v in verdicts:
                    if v is not None:
                        counts.fail(v)
                if done:
                    await conn.execute(
                        "UPDATE dead_letters SET replayed_at = now() WHERE dead_letter_id = ANY(%s)", [done]
                    )
                    await conn.commit()
                    counts.replayed += len(done)
                if progress is not None:
                    progress(counts)
                if publisher.lost is not None:
                    counts.stopped = publisher.lost
                    break
        finally:
            if publisher is not None:
                await publisher.__aexit__()
    if dry_run:
        log.info("replay (dry run): would replay %d, skip %d (truncated)", counts.replayed, counts.truncated)
    else:
        log.info(
            "replay: %d replayed, %d skipped (truncated), %d failed", counts.replayed, counts.truncated, counts.failed
        )
    return counts
