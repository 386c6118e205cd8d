"""The shipped broker configuration with the files `wearline gateways` writes, tried as an attacker on the plant
network would (issue 14): anonymous and wrong-password clients are refused, a gateway publishes only under its own
tenant and site and reads nothing (`#`, `$SYS/#`), a revoked gateway is refused after a reload, and ingest works end
to end over TLS with client certificates while strangers' certificates get nothing through.

An observer account with read access to everything (added by the test to the generated files) is the control: it
does receive the broker's `$SYS` topics and the gateways' telemetry, so "the gateway received nothing" is not the
silence of a broken subscription."""

from __future__ import annotations

import asyncio
import ssl
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry

import ingest
from ingest import add_gateway, list_gateways, revoke_gateway, write_broker_files
from simulators import MachineGroup, Scenario, publish_fleet, run_load
from tests.conftest import make_settings, unique
from tests.ingest._broker_access import AuthBroker, Certs, auth_broker, certificates, client
from tests.ingest._support import connect_db
from wearline.db import connect, migrate
from wearline.mosquitto import password_entry
from wearline.settings import Settings
from wearline.shipped import shipped

OBSERVER, OBSERVER_PASSWORD = "observer", "observer-password"


def _payload(ts: int, value: float = 1.0) -> bytes:
    return orjson.dumps({"v": 1, "ts": ts, "values": {"a": value}})


async def _registry(settings: Settings, broker: AuthBroker, *gateways: dict[str, object]) -> dict[str, str | None]:
    """Add ``gateways``, write the broker's files from the registry (plus the observer), and return the passwords."""
    passwords: dict[str, str | None] = {}
    async with await connect(settings.database) as conn:
        async with conn.transaction():
            for g in gateways:
                gateway, secret = await add_gateway(conn, **g)  # type: ignore[arg-type]
                passwords[gateway.name] = secret
        await _write_files(conn, settings, broker)
    return passwords


async def _write_files(conn: object, settings: Settings, broker: AuthBroker) -> None:
    write_broker_files(
        await list_gateways(conn, live_only=True),  # type: ignore[arg-type]
        settings.topic_prefix,
        password_file=broker.password_file,
        acl_file=broker.acl_file,
    )
    with broker.password_file.open("a") as out:
        out.write(password_entry(OBSERVER, OBSERVER_PASSWORD) + "\n")
    with broker.acl_file.open("a") as out:
        out.write(f"\nuser {OBSERVER}\ntopic read #\ntopic read $SYS/#\n")


def _tls(certs: Certs, name: str | None, *, signed_by: Certs | None = None) -> ssl.SSLContext:
    """Trusting ``certs``' CA, presenting client certificate ``name`` (of ``signed_by``'s CA, default the same)."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    if name is not None:
        issuer = signed_by or certs
        context.load_cert_chain(str(issuer.cert(name)), str(issuer.key(name)))
    return context


async def _over_tls(schema: str, prefix: str, broker: AuthBroker, certs: Certs, name: str) -> Settings:
    """Migrated settings whose MQTT clients use the broker's TLS listener with client certificate ``name``."""
    mqtt = {
        "host": "127.0.0.1",
        "port": broker.tls_port,
        "tls": True,
        "ca_file": str(certs.ca),
        "cert_file": str(certs.cert(name)),
        "key_file": str(certs.key(name)),
        "client_id": unique("wlt-tls-"),
    }
    settings = make_settings(schema, prefix, "native", mqtt=mqtt)
    await migrate(settings.database)
    return settings


def _refused(c: object) -> bool:
    connack = getattr(c, "connack", None)
    return connack is None or connack.is_failure


@pytest.mark.timeout(90)
async def test_anonymous_wrong_password_and_revoked_are_refused_and_a_gateway_reads_nothing(schema: str) -> None:
    settings = make_settings(schema, unique("wlt/"), "native")
    await migrate(settings.database)
    prefix = settings.topic_prefix
    with certificates([]) as certs, auth_broker(certs) as broker:
        passwords = await _registry(
            settings,
            broker,
            {"name": "gw-a", "tenant": "acme", "site": "plant1"},
            {"name": "gw-b", "tenant": "beta", "site": "plant9"},
            {"name": "gw-old", "tenant": "acme", "site": "plant1"},
        )
        broker.reload()
        with client(broker.port) as anonymous:
            pass
        with client(broker.port, username="gw-a", password="not-its-password") as wrong:
            pass
        with client(broker.port, username="nobody", password="whatever") as unknown:
            pass
        print(f"anonymous: {anonymous.connack}, wrong password: {wrong.connack}, unknown user: {unknown.connack}")
        assert _refused(anonymous)
        assert _refused(wrong)
        assert _refused(unknown)

        now = int(time.time() * 1000)
        own = [f"{prefix}/acme/plant1/line1/m{i}/telemetry" for i in range(5)]
        # Ten times as many attempts outside its scope: another site, another tenant, other kinds of topic.
        foreign = [
            t
            for i in range(5)
            for t in (
                f"{prefix}/acme/plant2/line1/m{i}/telemetry",
                f"{prefix}/beta/plant9/line1/m{i}/telemetry",
                f"{prefix}/beta/plant1/line1/m{i}/telemetry",
                f"{prefix}/acme/tickets/{i}",
                f"{prefix}/acme/plant1/line1/m{i}/command",
                f"{prefix}/acme/plant1/line1/telemetry",
                f"spBv1.0/acme/DDATA/node{i}/m{i}",
                f"$SYS/broker/fake{i}",
                f"other/acme/plant1/line1/m{i}/telemetry",
                f"{prefix}/acme/plant1/line1/m{i}/telemetry/extra",
            )
        ]
        assert len(foreign) == 10 * len(own)
        beta_own = [f"{prefix}/beta/plant9/line2/p{i}/telemetry" for i in range(5)]
        with (
            client(broker.port, username=OBSERVER, password=OBSERVER_PASSWORD) as observer,
            client(broker.port, username="gw-a", password=passwords["gw-a"]) as gw_a,
            client(broker.port, username="gw-b", password=passwords["gw-b"]) as gw_b,
        ):
            assert not _refused(observer)
            assert not _refused(gw_a)
            assert not _refused(gw_b)
            observer.subscribe("#", "$SYS/#")
            gw_a.subscribe("#", "$SYS/#", f"{prefix}/#", f"{prefix}/beta/plant9/+/+/telemetry")
            gw_a.publish(own + foreign, _payload(now))
            gw_b.publish(beta_own, _payload(now))
            deadline = time.monotonic() + 15
            while not (
                len([t for t in observer.messages() if not t.startswith("$SYS")]) >= len(own) + len(beta_own)
                and any(t.startswith("$SYS") for t in observer.messages())
            ):
                assert time.monotonic() < deadline, observer.messages()
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # anything refused would have arrived by now
            seen = [t for t in observer.messages() if not t.startswith("$SYS")]
            sys_seen = len(observer.messages()) - len(seen)
            print(
                f"gw-a published {len(own)} own + {len(foreign)} foreign, gw-b {len(beta_own)}: observer got "
                f"{len(seen)} telemetry + {sys_seen} $SYS; gw-a, subscribed to #, $SYS/# and beta's site, got "
                f"{len(gw_a.messages())} (SUBACK codes {sorted(set(gw_a.granted))})"
            )
            assert sorted(seen) == sorted(own + beta_own)
            assert sys_seen > 0, "the control: an account allowed to read $SYS receives it"
            assert gw_a.messages() == []

        # Revoked, the files written again and the broker reloaded: gw-old may no longer log in, and what it
        # publishes on the connection it held from before reaches nobody; gw-a still may.
        old_topics = [f"{prefix}/acme/plant1/line9/old{i}/telemetry" for i in range(5)]
        with (
            client(broker.port, username=OBSERVER, password=OBSERVER_PASSWORD) as observer,
            client(broker.port, username="gw-old", password=passwords["gw-old"]) as held,
        ):
            assert not _refused(held)
            observer.subscribe(f"{prefix}/#")
            held.publish(old_topics[:1], _payload(now))
            async with await connect(settings.database) as conn:
                async with conn.transaction():
                    await revoke_gateway(conn, "gw-old")
                await _write_files(conn, settings, broker)
            broker.reload()
            if held.paho is not None and held.paho.is_connected():
                held.publish(old_topics[1:], _payload(now))
            await asyncio.sleep(1.0)
            after_reload = observer.messages()
            held_connected = held.paho is not None and held.paho.is_connected()
        with client(broker.port, username="gw-old", password=passwords["gw-old"]) as after:
            pass
        with client(broker.port, username="gw-a", password=passwords["gw-a"]) as still:
            pass
        print(
            f"gw-old after revocation and SIGHUP: new connection {after.connack}; its held connection "
            f"{'still open' if held_connected else 'closed'}, observer got {after_reload}; gw-a: {still.connack}"
        )
        assert after_reload == old_topics[:1], "only what gw-old published before its revocation"
        assert _refused(after)
        assert not _refused(still)


@pytest.mark.timeout(120)
async def test_ingest_over_tls_with_client_certificates_end_to_end(schema: str) -> None:
    prefix = unique("wlt/")
    with (
        certificates(["gw-a", "ingest-svc", "stranger"]) as certs,
        certificates(["gw-a"], ca_name="someone-elses-ca") as other_ca,
        auth_broker(certs, require_certificate=True) as broker,
    ):
        settings = await _over_tls(schema, prefix, broker, certs, "ingest-svc")
        await _registry(
            settings,
            broker,
            {"name": "gw-a", "tenant": "acme", "site": "plant1", "password": False},
            {"name": "ingest-svc", "service": True, "password": False},
        )
        broker.reload()

        # Without a certificate, or with one from another CA, the TLS listener lets nobody in.
        with client(broker.tls_port, tls=_tls(certs, None)) as bare:
            pass
        with client(broker.tls_port, tls=_tls(certs, "gw-a", signed_by=other_ca)) as forged:
            pass
        print(f"no certificate: {bare.connack}; another CA's gw-a: {forged.connack}")
        assert _refused(bare)
        assert _refused(forged)

        machines, samples = 4, 25
        start = int(time.time() * 1000) - samples * 1000
        own = [
            (f"{prefix}/acme/plant1/line1/m{i}/telemetry", _payload(start + k * 1000, float(k)))
            for i in range(machines)
            for k in range(samples)
        ]
        foreign = [(f"{prefix}/beta/site{i}/line1/m{i}/telemetry", _payload(start)) for i in range(10 * machines)]
        registry = CollectorRegistry()
        stop = asyncio.Event()
        subscribed = asyncio.Event()
        async with asyncio.timeout(90), asyncio.TaskGroup() as tg:
            tg.create_task(ingest.run_ingest(settings, stop, registry=registry, subscribed=subscribed))
            await subscribed.wait()
            with (
                client(broker.tls_port, tls=_tls(certs, "gw-a")) as gw_a,
                client(broker.tls_port, tls=_tls(certs, "stranger")) as stranger,
            ):
                # A certificate of the right CA whose name is no gateway: connected, allowed nothing.
                assert not _refused(gw_a)
                assert not _refused(stranger)
                for topic, payload in own + foreign:
                    assert gw_a.paho is not None
                    gw_a.paho.publish(topic, payload, qos=1).wait_for_publish(10)
                stranger.publish([t for t, _ in own[:5] + foreign], _payload(start - 7_000))
            deadline = time.monotonic() + 30
            while (registry.get_sample_value("wearline_ingest_messages_total", {"outcome": "written"}) or 0) < len(own):
                assert time.monotonic() < deadline, "ingest did not commit gw-a's telemetry over TLS"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # anything the ACL let through would have been handled by now
            stop.set()
        with connect_db(schema) as conn:
            rows = conn.execute("SELECT count(*) FROM readings").fetchone()
            tenants = conn.execute("SELECT string_agg(name, ',' ORDER BY name) FROM tenants").fetchone()
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        handled = {
            o: registry.get_sample_value("wearline_ingest_messages_total", {"outcome": o})
            for o in ("written", "dead_letter")
        }
        print(
            f"over TLS: gw-a published {len(own)} own + {len(foreign)} foreign, a stranger {5 + len(foreign)}; "
            f"ingest handled {handled}, stored {rows} readings, tenants {tenants}, dead letters {dead}"
        )
        assert rows == (machines * samples,)
        assert tenants == ("acme",)
        assert dead == (0,)
        assert handled["written"] == len(own)
        assert not handled["dead_letter"]


def test_the_shipped_configuration_admits_no_anonymous_client() -> None:
    """The tests above render the shipped file with their own paths; this checks the file's own access part (one
    that keeps `allow_anonymous true`, as the file did before issue 14, fails here)."""
    options = [
        (key, value.strip())
        for key, value in (
            line.split(None, 1)
            for line in shipped("mosquitto/wearline.conf").read_text().splitlines()
            if line.strip() and line[0] != "#"
        )
    ]
    values: dict[str, list[str]] = {}
    for key, value in options:
        values.setdefault(key, []).append(value)
    assert values["allow_anonymous"] == ["false"]
    assert values["per_listener_settings"] == ["false"], "authentication must hold on every listener alike"
    assert values["password_file"] == ["/etc/mosquitto/wearline/passwd"]
    assert values["acl_file"] == ["/etc/mosquitto/wearline/acl"]
    tls = options.index(("listener", "8883"))
    block = {key for key, _ in options[tls + 1 : tls + 7]}
    assert {"certfile", "keyfile", "cafile", "require_certificate", "use_identity_as_username"} <= block


@pytest.mark.timeout(90)
async def test_the_simulators_publish_over_tls_with_a_client_certificate(schema: str) -> None:
    """Both publishers (the live fleet on aiomqtt, the load generator on paho) used to ignore mqtt.tls."""
    prefix = unique("wlt/")
    with certificates(["sim-gw"]) as certs, auth_broker(certs, require_certificate=True) as broker:
        settings = await _over_tls(schema, prefix, broker, certs, "sim-gw")
        await _registry(settings, broker, {"name": "sim-gw", "tenant": "acme", "site": "plant1", "password": False})
        broker.reload()
        scenario = Scenario(groups=(MachineGroup("centrifugal_pump", 3),))
        with client(broker.port, username=OBSERVER, password=OBSERVER_PASSWORD) as observer:
            observer.subscribe(f"{prefix}/#")
            live = await publish_fleet(settings.mqtt, prefix, scenario, asyncio.Event(), steps=5, time_scale=1000)
            load = await asyncio.to_thread(
                run_load, settings.mqtt, prefix, scenario, machines=20, duration_s=0.3, qos=1
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while len(observer.messages()) < live.messages + load.messages:
                assert time.monotonic() < deadline, f"{len(observer.messages())} of {live.messages + load.messages}"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            seen = observer.messages()
    print(f"over TLS as sim-gw: live {live.messages} messages, load {load.messages}; observer got {len(seen)}")
    assert live.messages > 0
    assert load.messages > 0
    assert len(seen) == live.messages + load.messages
    assert all(t.startswith(f"{prefix}/acme/plant1/") for t in seen)
