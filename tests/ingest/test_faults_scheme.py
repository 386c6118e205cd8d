"""The subscription scheme chosen per broker, and the settings around it (fast; not in the faults marker)."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from ingest._mqtt import probe_broker_version
from ingest._scheme import choose_subscription, owner_of
from tests.conftest import make_settings
from wearline.settings import SettingsError, load_settings

MOSQUITTO = "mosquitto version 2.0.11"


@pytest.mark.parametrize("off", ["none", "None", ""])
def test_shared_group_can_be_turned_off(off: str) -> None:
    s = load_settings(None, needs=None, ingest={"shared_group": off})
    assert s.ingest.shared_group is None
    sub = choose_subscription(s, client_id="w", broker_version="5.3.0")
    assert (sub.scheme, sub.topic_filter) == ("partitioned", "wearline/+/+/+/+/telemetry")


@pytest.mark.parametrize(
    ("version", "scheme", "why"),
    [
        (MOSQUITTO, "partitioned", "Mosquitto does not keep shared subscriptions"),
        ("5.8.0", "partitioned", "EMQX's durable sessions do not keep shared subscriptions"),
        (None, "partitioned", "unknown broker"),
    ],
)
def test_auto_picks_a_scheme_the_broker_keeps_across_its_restart(version: str | None, scheme: str, why: str) -> None:
    sub = choose_subscription(load_settings(None, needs=None), client_id="w", broker_version=version)
    assert sub.scheme == scheme
    assert why in sub.reason
    assert sub.topic_filter.startswith("$share/wearline-ingest/") == (scheme == "shared")
    assert sub.client_id == "w"


def test_forcing_shared_on_mosquitto_warns_in_the_reason() -> None:
    s = load_settings(None, needs=None, ingest={"subscription": "shared"})
    sub = choose_subscription(s, client_id="w", broker_version=MOSQUITTO)
    assert sub.scheme == "shared"
    assert "WARNING" in sub.reason


def test_partitioned_workers_have_stable_identities_and_disjoint_covering_shares() -> None:
    subs = [
        choose_subscription(
            load_settings(None, needs=None, ingest={"workers": 3, "worker": i}), client_id="w", broker_version=MOSQUITTO
        )
        for i in range(3)
    ]
    assert [s.client_id for s in subs] == ["w-0of3", "w-1of3", "w-2of3"]
    topics = [f"wearline/t/s/l/m{i}/telemetry" for i in range(300)]
    owners = [[s.owns(t) for s in subs] for t in topics]
    assert all(sum(o) == 1 for o in owners), "every topic belongs to exactly one worker"
    assert all(sum(o[i] for o in owners) > 50 for i in range(3)), "each worker gets a share"
    # The hash must not depend on the process (Python's hash() is salted per process).
    assert owner_of(topics[7], 3) == zlib.crc32(topics[7].encode()) % 3


@pytest.mark.parametrize(
    ("ingest", "message"),
    [
        ({"workers": 2, "worker": 2}, "ingest.worker (2) must be below ingest.workers (2)"),
        ({"subscription": "shared", "shared_group": "none"}, "ingest.shared_group is none"),
        ({"subscription": "shared", "workers": 2}, "leave ingest.workers at 1"),
    ],
)
def test_impossible_combinations_fail_at_start_up(ingest: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(None, needs=None, ingest=ingest)


def test_probe_names_the_broker() -> None:
    s = make_settings("unused", "unused")
    version = asyncio.run(probe_broker_version(s.mqtt, client_id="wlt-probe-test"))
    assert version is not None
    assert version.startswith("mosquitto version")
