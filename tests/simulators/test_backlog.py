"""Back-pressure is logged once per episode, with figures, not once per waiting message (issue 10, item 8)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from simulators import GatewaySpec, MachineGroup, PublishBacklog, Scenario, publish_fleet
from tests.conftest import make_settings, unique


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_an_episode_is_two_lines_with_its_figures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    backlog = PublishBacklog(100, clock=clock)
    backlog.queued(40)
    backlog.done(40)
    assert _lines(caplog) == [], "forty waiting is no back-pressure"
    backlog.queued(1_000)  # a gateway replays its buffer after an outage
    for i in range(900):  # acknowledgements arrive one by one; more messages join meanwhile
        backlog.done()
        if i % 3 == 0:
            backlog.queued()
    clock.now += 2.5
    while backlog.waiting > 50:
        backlog.done()
    lines = _lines(caplog)
    assert len(lines) == 2, lines
    assert "1000 messages wait for the broker (more than 100)" in lines[0]
    assert caplog.records[0].levelno == logging.WARNING
    assert lines[1].startswith("publish backlog cleared after 2.50 s: 1300 messages waited, at most 1000 at once")
    assert (backlog.stats.episodes, backlog.stats.peak, backlog.stats.seconds) == (1, 1000, 2.5)


def test_hovering_at_the_threshold_is_one_episode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    backlog = PublishBacklog(100, clock=FakeClock())
    backlog.queued(100)
    for _ in range(10_000):  # 100 <-> 101 waiting: today's per-call warning would fire 5,000 times
        backlog.queued()
        backlog.done()
    assert len(_lines(caplog)) == 1, "the episode started once and has not ended"
    backlog.close()
    assert len(_lines(caplog)) == 2
    assert backlog.stats.episodes == 1


async def test_a_gateway_replay_is_one_episode_not_a_line_per_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = make_settings(unique("wlt_"), unique("wlt/"))
    # 50 pumps behind one gateway that loses its uplink for about 30 s at a time: each replay hands the client
    # ~1,500 messages at once. Before: aiomqtt warned "There are N pending publish calls" for each one above 200.
    scenario = Scenario(
        groups=(MachineGroup("centrifugal_pump", 50, conditions=("mid",)),),
        gateways=GatewaySpec(machines_per_gateway=50, outage_rate_per_day=86400 / 15, outage_mean_s=30),
    )
    async with asyncio.timeout(60):
        summary = await publish_fleet(
            settings.mqtt, settings.topic_prefix, scenario, asyncio.Event(), steps=120, time_scale=1000, seed=3
        )
    lines = _lines(caplog)
    started = [s for s in lines if "publishing is backed up" in s]
    ended = [s for s in lines if s.startswith("publish backlog cleared")]
    flood = [s for s in lines if "pending publish calls" in s]
    print(
        f"published {summary.messages} messages, {summary.gateways.outages} outages, "
        f"{summary.gateways.replayed} samples replayed; episodes {summary.backlog.episodes}, "
        f"peak {summary.backlog.peak}; log lines: {len(started)} started, {len(ended)} ended, "
        f"{len(flood)} per-call warnings"
    )
    assert summary.gateways.outages >= 2
    assert summary.gateways.replayed >= 1_000
    assert flood == []
    assert summary.backlog.episodes >= 1
    assert len(started) == len(ended) == summary.backlog.episodes
    assert len(started) <= summary.gateways.outages + 1  # at most one per replay, and one for the final flush
    assert summary.backlog.peak > 200
