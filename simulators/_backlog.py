"""Back-pressure from the broker, logged once per episode rather than once per waiting message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BacklogStats", "PublishBacklog"]

log = logging.getLogger(__name__)


@dataclass
class BacklogStats:
    """Back-pressure over a run: episodes, the most messages waiting at once, and the seconds spent backed up."""

    episodes: int = 0
    peak: int = 0
    seconds: float = 0.0


class PublishBacklog:
    """Counts publishes waiting for the broker; an episode starts above ``threshold`` and ends at half of it.

    Each episode is two log lines: a warning when it starts (how many wait) and a line when it ends (how long it
    lasted, how many messages waited in it, the most at once). The gap between the two levels keeps a backlog
    hovering around the threshold from starting an episode per message.
    """

    def __init__(self, threshold: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold}")
        self.threshold = threshold
        self.stats = BacklogStats()
        self._clock = clock
        self._waiting = 0
        self._since: float | None = None
        self._waited = 0
        self._peak = 0

    @property
    def waiting(self) -> int:
        """Publishes handed to the client and not yet acknowledged (or written out, at QoS 0)."""
        return self._waiting

    def queued(self, n: int = 1) -> None:
        """``n`` more publishes wait for the broker."""
        self._waiting += n
        if self._since is not None:
            self._waited += n
            self._peak = max(self._peak, self._waiting)
        elif self._waiting > self.threshold:
            self._since = self._clock()
            self._waited = self._peak = self._waiting
            log.warning(
                "publishing is backed up: %d messages wait for the broker (more than %d); "
                "the simulated clock waits with them",
                self._waiting,
                self.threshold,
            )

    def done(self, n: int = 1) -> None:
        """``n`` publishes were acknowledged or gave up."""
        self._waiting -= n
        if self._since is not None and self._waiting <= self.threshold // 2:
            self._end()

    def close(self) -> None:
        """End an episode still open (the run stops while backed up)."""
        if self._since is not None:
            self._end()

    def _end(self) -> None:
        assert self._since is not None
        lasted = self._clock() - self._since
        self._since = None
        self.stats.episodes += 1
        self.stats.peak = max(self.stats.peak, self._peak)
        self.stats.seconds += lasted
        log.info(
            "publish backlog cleared after %.2f s: %d messages waited, at most %d at once; %d still waiting",
            lasted,
            self._waited,
            self._peak,
            self._waiting,
        )
