"""Bounds that keep a flood of bad input from growing ingest's memory or the dead-letter table without limit.

``LruCache`` bounds what a worker remembers per machine or topic; ``DeadLetterLimiter`` decides how many of a
batch's dead letters each topic may write (token buckets per topic and for all topics together). What a limiter
refuses is still counted by the caller: limits apply to storage, never to metrics.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["DeadLetterLimiter", "LruCache", "TokenBucket"]

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A mapping of at most ``maxsize`` entries that evicts the least recently used one."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self.evictions = 0

    def get(self, key: K) -> V | None:
        """The value, marked as just used; ``None`` when absent."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Store ``value``, evicting the least recently used entry when full."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: K) -> V | None:
        """Remove and return the value, if any."""
        return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; starts full."""

    __slots__ = ("_stamp", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._stamp = now

    def available(self, now: float) -> int:
        """Whole tokens available at ``now`` (refilled, not taken)."""
        if now > self._stamp:
            self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        """Spend ``n`` tokens (after :meth:`available` said they were there)."""
        self.tokens = max(0.0, self.tokens - n)


class DeadLetterLimiter:
    """How many dead letters each topic may write now: a bucket per topic and one for all topics.

    Buckets of topics not seen for a while are evicted (at most ``max_topics``); a topic that comes back starts
    with a full bucket, and the shared bucket still bounds a flood spread over more topics than that.
    """

    def __init__(
        self,
        *,
        rate_per_topic: float,
        burst_per_topic: int,
        rate_total: float,
        max_topics: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_topic
        self._burst = burst_per_topic
        self._clock = clock
        self._topics: LruCache[str, TokenBucket] = LruCache(max_topics)
        self._total = TokenBucket(rate_total, rate_total * 10, clock())

    def allow(self, topics: Iterable[str]) -> list[bool]:
        """For each dead letter's topic in order, whether it may be written; spends nothing (see :meth:`spend`)."""
        now = self._clock()
        total = self._total.available(now)
        left: dict[str, int] = {}
        out: list[bool] = []
        for topic in topics:
            n = left.get(topic)
            if n is None:
                bucket = self._topics.get(topic)
                n = bucket.available(now) if bucket is not None else self._burst
            ok = n > 0 and total > 0
            if ok:
                n -= 1
                total -= 1
            left[topic] = n
            out.append(ok)
        return out

    def spend(self, topics: Iterable[str]) -> None:
        """Take one token per written dead letter, once its transaction committed (a retried batch spends once)."""
        now = self._clock()
        for topic in topics:
            bucket = self._topics.get(topic)
            if bucket is None:
                bucket = TokenBucket(self._rate, self._burst, now)
                self._topics.put(topic, bucket)
            bucket.take(1)
            self._total.take(1)

    @property
    def topics(self) -> int:
        """Topics with a bucket in memory."""
        return len(self._topics)
