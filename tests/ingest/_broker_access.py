"""Helpers for the broker-access tests: a CA and certificates made with the ``openssl`` command, a Mosquitto with the
shipped configuration and the password and ACL files ``wearline gateways`` writes, and an MQTT client that records
what its connection, subscriptions and publishes came to."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.conftest import unique
from wearline.mosquitto import LocalAuth, LocalBroker, LocalTls, free_port

OPENSSL = shutil.which("openssl")
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    """A test CA and what it signed: the broker's server certificate and client certificates by common name."""

    folder: Path
    ca: Path

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


@contextlib.contextmanager
def certificates(clients: list[str], *, ca_name: str = "wearline-test-ca") -> Iterator[Certs]:
    """A CA (``ca.crt``), ``server`` for 127.0.0.1 and localhost, and one client certificate per name (CN=name).

    Not under pytest's 0700 tmp_path: Mosquitto started as root reads them as the mosquitto user."""
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed (Debian's openssl package): cannot make test certificates")
    folder = Path(tempfile.mkdtemp(prefix="wlt-access-certs-"))
    os.chmod(folder, 0o755)
    try:
        yield _make_certs(folder, clients, ca_name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _make_certs(folder: Path, clients: list[str], ca_name: str) -> Certs:
    _openssl(
        "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", f"/CN={ca_name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    for name, usage, san in [("server", "serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")] + [
        (c, "clientAuth", "") for c in clients
    ]:
        (folder / f"{name}.ext").write_text(
            f"{san}basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            "authorityKeyIdentifier=keyid\n"
        )
        _openssl("req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=folder,
        )  # fmt: skip
    for path in folder.iterdir():
        os.chmod(path, 0o644)  # the broker drops to its own user, which must read its key (a test CA: no secret)
    return Certs(folder, folder / "ca.crt")


class AuthBroker(LocalBroker):
    """Mosquitto with the shipped configuration, the password and ACL files in :attr:`folder` (written by the test
    through ``wearline gateways``), a plain listener on :attr:`port` and a TLS one on :attr:`tls_port`."""

    def __init__(self, certs: Certs, *, require_certificate: bool) -> None:
        # Not under pytest's 0700 tmp_path: Mosquitto started as root reads its files as the mosquitto user.
        self.folder = Path(tempfile.mkdtemp(prefix="wlt-access-mosquitto-"))
        self.password_file = self.folder / "passwd"
        self.acl_file = self.folder / "acl"
        for path in (self.password_file, self.acl_file):
            path.write_text("")
            os.chmod(path, 0o644)  # `gateways files` keeps an existing file's mode: the broker's user reads it
        self.tls_port = free_port()
        tls = LocalTls(
            port=self.tls_port,
            certfile=certs.cert("server"),
            keyfile=certs.key("server"),
            cafile=certs.ca,
            require_certificate=require_certificate,
            use_identity_as_username=require_certificate,
        )
        auth = LocalAuth(password_file=self.password_file, acl_file=self.acl_file, tls=tls)
        super().__init__(self.folder, auth=auth, verbose=True)

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password and ACL files again."""
        assert self.proc is not None
        mark = self.log.read_text(errors="replace").count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log.read_text(errors="replace").count("Reloading config") <= mark:
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.05)

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def auth_broker(certs: Certs, *, require_certificate: bool = False) -> Iterator[AuthBroker]:
    b = AuthBroker(certs, require_certificate=require_certificate)
    b.start()
    try:
        yield b
    finally:
        b.close()


@dataclass
class Client:
    """A connected (or refused) MQTT 5 client that records its CONNACK, granted subscriptions and what it received."""

    connack: ReasonCode | None = None
    granted: list[int] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    paho: paho.Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topics: list[str], payload: bytes) -> None:
        """QoS 1, waiting for each PUBACK (the broker acknowledges a publish its ACL drops, too)."""
        assert self.paho is not None
        infos = [self.paho.publish(t, payload, qos=1) for t in topics]
        for info in infos:
            info.wait_for_publish(10)

    def subscribe(self, *filters: str) -> None:
        assert self.paho is not None
        done = threading.Event()

        def on_subscribe(_c: paho.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object) -> None:
            self.granted.extend(c.value for c in codes)
            done.set()

        self.paho.on_subscribe = on_subscribe
        self.paho.subscribe([(f, 1) for f in filters])
        assert done.wait(10), "no SUBACK"

    def messages(self) -> list[str]:
        with self._lock:
            return list(self.received)


@contextlib.contextmanager
def client(
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Client]:
    """Connect and wait for the CONNACK; a refused client is yielded too (``connack`` says why)."""
    c = Client()
    p = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("wlt-acc-"), protocol=MQTTProtocolVersion.MQTTv5)
    c.paho = p
    if username is not None:
        p.username_pw_set(username, password)
    if tls is not None:
        p.tls_set_context(tls)
    answered = threading.Event()

    def on_connect(_c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        c.connack = reason
        answered.set()

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with c._lock:
            c.received.append(msg.topic)

    def on_disconnect(_c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if c.connack is None:
            c.connack = reason
        answered.set()

    p.on_connect, p.on_message, p.on_disconnect = on_connect, on_message, on_disconnect
    p.reconnect_delay_set(60, 60)  # a refused client must not retry during the test
    try:
        p.connect("127.0.0.1", port)
    except (OSError, ssl.SSLError) as exc:
        c.connack = None
        c.received.append(f"connect failed: {exc}")
        yield c
        return
    p.loop_start()
    try:
        answered.wait(10)
        yield c
    finally:
        p.disconnect()
        p.loop_stop()
