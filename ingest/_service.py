"""The ingest process: subscribe, batch, commit, acknowledge; reconnect and retry without losing anything."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from ingest._housekeeping import Housekeeping, StorageUpkeep
from ingest._membership import Heartbeat
from ingest._metrics import IngestMetrics
from ingest._mqtt import BrokerError, Message, Subscriber, probe_broker_version
from ingest._scheme import Subscription, broker_kind, choose_subscription
from ingest._sparkplug import Sessions, SparkplugMetrics
from ingest._sparkplug_host import HostClient
from ingest._writer import BatchWriter, Committed, DeadLetter, prepare_connection
from wearline.db import check_migrated, open_pool
from wearline.health import PROCESS_HEALTH, Health
from wearline.settings import Settings
from wearline.sparkplug import NAMESPACE
from wearline.wire import Reason

__all__ = ["IngestSummary", "freeze_start_up", "run_ingest"]

log = logging.getLogger(__name__)
# A batch while catching up takes at most this share of the Receive Maximum; the rest keeps arriving meanwhile.
# Measured (`bench ingest --backlog 300000`, 10 readings a message, Receive Maximum 4,000): no catch-up 326-329k
# readings/s, half 361-364k, three quarters 204-256k (the broker then waits on our acknowledgements).
_CATCH_UP = 0.5


def freeze_start_up() -> None:
    """Move everything alive now out of the cyclic garbage collector's way (``gc.freeze``), for a process that
    runs ingest and little else. Modules, settings and pools live for the whole process, yet every full
    collection walked them: freezing after start-up took ingest's CPU from 91.9-95.7 to 77.1-81.3 us a message at
    100 readings (`bench ingest --profile 100 --duration 30`, two runs each, load 0.7-2.2). Not for a process that
    hosts other work (the demo, tests): what it freezes is never collected if it becomes cyclic garbage later."""
    gc.freeze()


KEEP_UP_S = 60.0
"""Ingest is not keeping up (``/readyz``) when its loop has neither committed a batch nor found the broker idle
for this long: a commit retrying against a dead database, or one batch taking a minute."""


@dataclass
class IngestSummary:
    messages: int = 0
    readings: int = 0
    dead_letters: int = 0
    batches: int = 0


class _Stopped(Exception):
    """Shutdown was requested while a batch could not be committed: it stays unacknowledged for redelivery."""


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _commit_with_retry(
    writer: BatchWriter, batch: list[Message], metrics: IngestMetrics, stop: asyncio.Event, health: Health
) -> tuple[int, list[DeadLetter], list[int]]:
    """Commit one batch, retrying database outages with backoff until it succeeds or shutdown is asked."""

    def give_up(_: RetryCallState) -> bool:
        return stop.is_set()

    def before_sleep(state: RetryCallState) -> None:
        metrics.db_up.set(0)
        health.set("database", False, f"write failed: {state.outcome.exception() if state.outcome else None}")
        metrics.db_retries.inc()
        log.warning("database write failed, retrying: %s", state.outcome.exception() if state.outcome else None)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(psycopg.OperationalError),
        wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
        stop=give_up,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                rows, dead, stamps = await writer.prepare(batch)
                received = writer.last_received
                try:
                    done = await writer.commit(rows, dead)
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    # One bad message must not hold the rest hostage: commit them one by one and keep the
                    # ones the database refuses as dead letters.
                    log.warning("batch refused by the database (%s); writing message by message", exc)
                    done, stamps = await _commit_singly(writer, batch)
    except psycopg.OperationalError as exc:
        raise _Stopped from exc
    metrics.db_up.set(1)
    health.set("database", True)
    metrics.readings_received.inc(received)
    return done.readings, done.dead, stamps


async def _commit_singly(writer: BatchWriter, batch: list[Message]) -> tuple[Committed, list[int]]:
    readings = 0
    all_dead: list[DeadLetter] = []
    all_stamps: list[int] = []
    for msg in batch:
        rows, dead, stamps = await writer.prepare([msg])
        try:
            done = await writer.commit(rows, dead)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            dead = [DeadLetter(msg.topic, msg.payload, Reason.DB_REJECTED, f"database refused: {exc}"[:500])]
            done = await writer.commit({}, dead)
            stamps = []
        readings += done.readings
        all_dead.extend(done.dead)
        all_stamps.extend(stamps)
    return Committed(readings, all_dead), all_stamps


async def _choose(
    settings: Settings, client_id: str, metrics: IngestMetrics, stop: asyncio.Event
) -> Subscription | None:
    """Ask the broker what it is (retrying while it is unreachable) and pick the scheme that keeps the promise;
    None if asked to stop before the broker answered."""
    backoff = 0.5
    while True:
        try:
            version = await probe_broker_version(settings.mqtt, client_id=f"{client_id}-probe")
            break
        except BrokerError as exc:
            metrics.broker_reconnects.inc()
            delay = backoff * random.uniform(0.5, 1.0)
            log.warning("broker: %s; retrying in %.1f s", exc, delay)
            await _sleep_unless(stop, delay)
            if stop.is_set():
                return None
            backoff = min(backoff * 2, 10.0)
    sub = choose_subscription(settings, client_id=client_id, broker_version=version)
    metrics.subscription.labels(sub.scheme, broker_kind(version)).set(1)
    log.info(
        "subscription scheme: %s (%s); broker: %s; identity %s, share %s",
        sub.scheme,
        sub.reason,
        sub.broker,
        sub.client_id,
        sub.share,
    )
    return sub


async def run_ingest(
    settings: Settings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry = REGISTRY,
    client_id: str | None = None,
    subscribed: asyncio.Event | None = None,
    on_commit: Callable[[int, list[int]], None] | None = None,
    health: Health = PROCESS_HEALTH,
) -> IngestSummary:
    """Run ingest until ``stop`` is set; the batch in hand is committed and acknowledged before returning.

    ``subscribed`` is set once the broker has confirmed the subscription (the broker keeps messages only for
    subscriptions it knows, so a caller that publishes must wait for it on a brand-new session).
    ``on_commit(readings, sample_timestamps_ms)`` is called after each commit (``wearline bench ingest`` uses it).
    ``health`` gets the ``database``, ``broker`` and ``keeping_up`` checks of ``/readyz``.
    """
    ing = settings.ingest
    metrics = IngestMetrics(registry)
    summary = IngestSummary()
    started = time.monotonic()
    health.declare("database", "broker", "keeping_up")
    progress = [started]  # when the loop last committed a batch or found nothing waiting

    def keeping_up() -> tuple[bool, str]:
        idle = time.monotonic() - progress[0]
        return idle < KEEP_UP_S, f"no batch committed and no idle turn for {idle:.0f} s"

    health.probe("keeping_up", keeping_up)
    # Before anything starts (and before the summary line a stop logs): a schema nobody migrated is one line.
    mode = await check_migrated(settings.database)
    pool = await open_pool(settings.database, name="ingest", configure=prepare_connection)
    stack = contextlib.AsyncExitStack()
    try:
        metrics.db_up.set(1)
        health.set("database", True)
        scheme = await _choose(settings, client_id or settings.mqtt.client_id, metrics, stop)
        if scheme is None:
            return summary
        sessions = await _sparkplug_host(settings, scheme, registry, stack)
        if sessions is not None:
            async with pool.connection() as conn:
                loaded = await sessions.load_owned(conn, scheme.owns)
            log.info("sparkplug: %d edge node session(s) of this worker read from the database", loaded)
        writer = BatchWriter(pool, settings, mode, metrics, sparkplug=sessions)
        beat = await stack.enter_async_context(Heartbeat(pool, scheme, ing.heartbeat_s, metrics))
        upkeep = StorageUpkeep(mode, settings.database.partition_days_ahead, settings.database.retention_days)
        await stack.enter_async_context(
            Housekeeping(
                pool, writer.surge, retention_days=ing.dead_letter_retention_days, storage=upkeep, metrics=metrics
            )
        )
        backoff = 0.5
        connected_before = False
        leaving = session_ended = False
        # Behind (two batches or more already buffered: a backlog after a restart, or a commit that stalled),
        # batches grow to _CATCH_UP x the window, up to 4 x batch_max_messages: fewer, larger transactions while the
        # rest of the window keeps arriving. A stream that keeps up keeps its batch size, and so its latency (p99
        # at 50,000 readings/s 224 ms in two runs with it, 223-230 without).
        catch_up = max(ing.batch_max_messages, min(4 * ing.batch_max_messages, int(ing.receive_maximum * _CATCH_UP)))
        while not stop.is_set():
            try:
                async with Subscriber(
                    settings=settings.mqtt,
                    topic_filter=scheme.topic_filter,
                    client_id=scheme.client_id,
                    receive_maximum=ing.receive_maximum,
                    max_buffered=ing.receive_maximum,
                    max_payload_bytes=ing.max_payload_bytes,
                    extra_filters=sparkplug_filters(ing.sparkplug.groups),
                ) as sub:
                    if connected_before and not sub.session_present:
                        log.warning(
                            "the broker did not keep our session: messages published while we were disconnected "
                            "are lost (check the broker's session expiry and persistence)"
                        )
                        metrics.sessions_lost.inc()
                    connected_before = True
                    metrics.broker_up.set(1)
                    health.set("broker", True)
                    held = [0]
                    # Everything received and not yet acknowledged: the buffer plus the batch being committed.

                    def depth(sub: Subscriber = sub, held: list[int] = held) -> int:
                        return sub.buffered + held[0]

                    metrics.queue_depth.set_function(depth)
                    backoff = 0.5
                    while True:
                        if stop.is_set() and not leaving:
                            # A shared group's member hands its share back when others remain (and any worker told
                            # to retire): no new messages, drain what the broker holds for us, end the session below.
                            retire = ing.retire_on_stop or (scheme.scheme == "shared" and await beat.others_alive())
                            if not retire:
                                break
                            sub.unsubscribe()
                            leaving = True
                        batch = await sub.next_batch(
                            catch_up if sub.buffered >= 2 * ing.batch_max_messages else ing.batch_max_messages,
                            ing.batch_max_delay_ms / 1000,
                            idle_s=0.5,
                        )
                        if subscribed is not None and sub.subscribed:
                            subscribed.set()
                        progress[0] = time.monotonic()
                        if not batch:
                            if sessions is not None:
                                sessions.expire()  # a missing seq times out while its node is quiet, too
                            if leaving and sub.subscribed:
                                await sub.end_session()
                                session_ended = True
                                log.info("retired: drained, session %s ended", scheme.client_id)
                                break
                            continue
                        held[0] = len(batch)
                        metrics.received.inc(len(batch))
                        t0 = time.perf_counter()
                        # Partitioned: another worker's share is in that worker's own session; ours to skip.
                        mine = [m for m in batch if scheme.owns(m.topic)]
                        metrics.messages.labels("not_ours").inc(len(batch) - len(mine))
                        readings, dead, stamps = 0, list[DeadLetter](), list[int]()
                        if mine:
                            readings, dead, stamps = await _commit_with_retry(writer, mine, metrics, stop, health)
                        progress[0] = time.monotonic()
                        sub.ack(batch)
                        held[0] = 0
                        if on_commit is not None:
                            on_commit(readings, stamps)
                        _observe(
                            metrics,
                            batch=mine,
                            readings=readings,
                            dead=dead,
                            stamps=stamps,
                            seconds=time.perf_counter() - t0,
                        )
                        summary.messages += len(mine)
                        summary.readings += readings
                        summary.dead_letters += len(dead)
                        summary.batches += 1
            except BrokerError as exc:
                metrics.broker_up.set(0)
                health.set("broker", False, str(exc))
                metrics.broker_reconnects.inc()
                # Bounded and jittered, so that a fleet of workers does not reconnect in lockstep after a restart.
                delay = backoff * random.uniform(0.5, 1.0)
                log.warning("broker: %s; reconnecting in %.1f s", exc, delay)
                await _sleep_unless(stop, delay)
                backoff = min(backoff * 2, 10.0)
            except _Stopped:
                log.warning("stopping with a batch uncommitted (database unavailable); the broker will redeliver it")
                break
        await beat.close(session_ended=session_ended)
    finally:
        metrics.broker_up.set(0)
        health.set("broker", False, "stopped")
        await stack.aclose()
        await pool.close()
        log.info(
            "ingest stopped after %.1f s: %d messages, %d readings, %d dead letters in %d batches",
            time.monotonic() - started,
            summary.messages,
            summary.readings,
            summary.dead_letters,
            summary.batches,
        )
    return summary


def sparkplug_filters(groups: Collection[str]) -> list[str]:
    """The subscriptions of a Sparkplug host for ``groups`` (their commands arrive too and are skipped)."""
    return [f"{NAMESPACE}/{group}/#" for group in sorted(groups)]


async def _sparkplug_host(
    settings: Settings, scheme: Subscription, registry: CollectorRegistry, stack: contextlib.AsyncExitStack
) -> Sessions | None:
    """The Sparkplug host application's sessions and MQTT connection, when ``ingest.sparkplug.groups`` names any."""
    sp = settings.ingest.sparkplug
    if not sp.groups:
        return None
    host = await stack.enter_async_context(
        HostClient(
            settings=settings.mqtt,
            client_id=f"{scheme.client_id}-spb",
            host_id=sp.host_id,
            publish_state=scheme.worker == 0,
        )
    )
    return Sessions(settings.ingest, SparkplugMetrics(registry), request_rebirth=host.request_rebirth)


def _observe(
    metrics: IngestMetrics,
    *,
    batch: list[Message],
    readings: int,
    dead: list[DeadLetter],
    stamps: list[int],
    seconds: float,
) -> None:
    metrics.messages.labels("written").inc(len(batch) - len(dead))
    for d in dead:
        metrics.messages.labels("dead_letter").inc()
        metrics.dead_letters.labels(d.reason).inc()
    metrics.readings.inc(readings)
    metrics.batch_messages.observe(len(batch))
    metrics.commit_seconds.observe(seconds)
    redelivered = sum(m.redelivered for m in batch)
    if redelivered:
        metrics.redeliveries.inc(redelivered)
    now_ms = time.time() * 1000
    if stamps:
        metrics.newest_sample.observe(max(stamps) / 1000)
    for ms in stamps[:: max(1, len(stamps) // 100)]:  # a sample of the batch keeps this off the hot path
        metrics.latency_seconds.observe(max(0.0, (now_ms - ms) / 1000))
