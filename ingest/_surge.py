"""Dead letters in ingest's log, not only in its metrics: at most one warning per reason per interval.

A surge (a gateway clock running ahead, a firmware sending a new payload shape) then shows as one line every few
seconds with how many, what share of the messages, the topic sending most and one example, e.g.::

    dead letters: 9,412 ts_future in the last 10.0 s (94% of 10,013 messages; 9,000 not stored, rate limit);
    top topic wearline/acme/plant1/line1/pump-002/telemetry (1,883); e.g. ts is 3540 s ahead of this host's clock
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["SurgeLog"]

log = logging.getLogger("ingest.dead_letters")

_MAX_TOPICS = 1000  # distinct topics counted per reason and interval; the rest only add to the total


@dataclass
class _Pending:
    count: int = 0
    unstored: int = 0
    topics: Counter[str] = field(default_factory=Counter)
    example: str = ""


class SurgeLog:
    """Collects dead letters per reason and logs each reason at most once per ``interval_s``.

    The first dead letter of a reason is logged at once; later ones are summed and logged when the interval has
    passed (by the next :meth:`record` or :meth:`tick`); :meth:`flush` logs what is left, at shutdown.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._last: dict[str, float] = {}
        self._messages = 0  # messages committed since start; a reason's share is over its own window
        self._mark: dict[str, int] = {}
        self._since = clock()

    def record(self, messages: int, dead: Iterable[tuple[str, str, str, bool]]) -> None:
        """One committed batch: its message count and each dead letter's (reason, topic, detail, stored)."""
        self._messages += messages
        for reason, topic, detail, stored in dead:
            p = self._pending.get(reason)
            if p is None:
                p = self._pending[reason] = _Pending()
            p.count += 1
            p.unstored += not stored
            if topic in p.topics or len(p.topics) < _MAX_TOPICS:
                p.topics[topic] += 1
            if not p.example:
                p.example = detail
        self.tick()

    def tick(self) -> None:
        """Log every reason whose interval has passed."""
        now = self._clock()
        for reason in [r for r, p in self._pending.items() if p.count]:
            if now - self._last.get(reason, -self._interval) >= self._interval:
                self._emit(reason, now)

    def flush(self) -> None:
        """Log everything still pending, whatever the interval."""
        now = self._clock()
        for reason in [r for r, p in self._pending.items() if p.count]:
            self._emit(reason, now)

    def _emit(self, reason: str, now: float) -> None:
        p = self._pending.pop(reason)
        window = now - self._last.get(reason, self._since)
        messages = self._messages - self._mark.get(reason, 0)
        self._last[reason] = now
        self._mark[reason] = self._messages
        topic, top = p.topics.most_common(1)[0]
        share = f"{100 * p.count / messages:.0f}% of {messages:,} messages" if messages else ""
        unstored = f"{p.unstored:,} not stored, rate limit" if p.unstored else ""
        extra = "; ".join(x for x in (share, unstored) if x)
        log.warning(
            "dead letters: %s %s in the last %.1f s%s; top topic %s (%s); e.g. %s",
            f"{p.count:,}",
            reason,
            window,
            f" ({extra})" if extra else "",
            topic[:200],
            f"{top:,}",
            p.example[:200],
        )
