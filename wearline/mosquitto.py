"""Mosquitto's file formats, written from Python: the shipped configuration turned into one for a broker of our own
(tests, benchmarks, the soak), password-file entries in ``mosquitto_passwd``'s PBKDF2-SHA512 format, and
:class:`LocalBroker`, which runs such a broker.

The shipped configuration (deploy/mosquitto/wearline.conf) refuses anonymous clients and reads its password file,
ACL file and TLS certificates from /etc/mosquitto/wearline/. A broker started by a test or benchmark keeps every
delivery setting of it and replaces only the listener and authentication part: either with the files the caller
generated (:class:`LocalAuth`), or, for harnesses whose subject is delivery rather than access, with one
**test-only listener** on 127.0.0.1 that admits anonymous clients. That listener exists only in the rendered copy,
never in the shipped file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from wearline.errors import WearlineError
from wearline.shipped import shipped

__all__ = ["LocalAuth", "LocalBroker", "LocalTls", "free_port", "local_broker_config", "password_entry"]

# Options that belong to the listener and authentication part of the shipped file: a rendered copy drops them all
# and writes its own. Everything else (persistence, queues, in-flight window, packet size) is kept as shipped.
_ACCESS_OPTIONS = frozenset(
    {
        "listener",
        "allow_anonymous",
        "password_file",
        "acl_file",
        "per_listener_settings",
        "certfile",
        "keyfile",
        "cafile",
        "capath",
        "require_certificate",
        "use_identity_as_username",
        "use_subject_as_username",
        "tls_version",
        "ciphers",
    }
)
_PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$ (2.0); the file is read at start and on SIGHUP only


@dataclass(frozen=True)
class LocalTls:
    """A TLS listener of a broker of our own: server certificate, key and the CA client certificates are checked
    against. ``require_certificate`` makes every client present one; ``use_identity_as_username`` then makes the
    certificate's common name the client's user name for the ACL (no password)."""

    port: int
    certfile: Path
    keyfile: Path
    cafile: Path
    require_certificate: bool = False
    use_identity_as_username: bool = False


@dataclass(frozen=True)
class LocalAuth:
    """Password and ACL files for a broker of our own, and optionally a TLS listener beside the plain one."""

    password_file: Path
    acl_file: Path
    tls: LocalTls | None = None


def local_broker_config(shipped: str, *, port: int, persistence: Path, auth: LocalAuth | None = None) -> str:
    """The shipped configuration ``shipped`` for a broker on 127.0.0.1:``port`` keeping its snapshot in
    ``persistence``; with ``auth``, its password and ACL files (and TLS listener), else the test-only anonymous
    listener."""
    lines = []
    for line in shipped.splitlines():
        option = line.split(None, 1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if option in _ACCESS_OPTIONS:
            continue
        lines.append(f"persistence_location {persistence}/" if option == "persistence_location" else line)
    lines.append("")
    lines.append("# Rendered for a broker of Wearline's own (wearline/mosquitto.py), not for deployment.")
    lines.append("per_listener_settings false")
    if auth is None:
        lines += ["allow_anonymous true", f"listener {port} 127.0.0.1"]
    else:
        lines += [
            "allow_anonymous false",
            f"password_file {auth.password_file}",
            f"acl_file {auth.acl_file}",
            f"listener {port} 127.0.0.1",
        ]
        if auth.tls is not None:
            t = auth.tls
            lines += [
                f"listener {t.port} 127.0.0.1",
                f"certfile {t.certfile}",
                f"keyfile {t.keyfile}",
                f"cafile {t.cafile}",
                f"require_certificate {str(t.require_certificate).lower()}",
                f"use_identity_as_username {str(t.use_identity_as_username).lower()}",
            ]
    return "\n".join(lines) + "\n"


def password_entry(username: str, password: str, *, salt: bytes | None = None) -> str:
    """One line of a Mosquitto password file, ``user:$7$iterations$salt$hash`` (PBKDF2-SHA512, base64), the format
    ``mosquitto_passwd`` writes since Mosquitto 2.0.

    >>> password_entry("gw-1", "secret", salt=bytes(12)).split("$")[:4]
    ['gw-1:', '7', '101', 'AAAAAAAAAAAAAAAA']
    """
    if not username or ":" in username or any(c.isspace() for c in username):
        raise ValueError(f"a broker user name cannot be empty or hold ':' or white space: {username!r}")
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"{username}:$7${_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _option(text: str, name: str) -> str | None:
    return next((line.split()[1] for line in text.splitlines() if line.startswith(name + " ")), None)


def _save_period_s(text: str) -> float:
    """The longest a running broker of this configuration goes without saving its snapshot.

    Mosquitto 2.0 saves on a timer once its whole-second clock is more than ``autosave_interval`` past the last
    save, checked each time its event loop wakes: ``autosave_interval`` + 1 s, and a second more for a loop busy or
    slow to wake (an idle 2.0.11 saves within it: ``test_a_quiet_broker_still_saves_within_its_period``).
    The harnesses bound what a kill -9 may lose by what the broker acknowledged in that span, so a configuration
    that saves on changes instead, or never, is refused here rather than given a bound it does not have."""
    interval = _option(text, "autosave_interval")
    if _option(text, "persistence") != "true" or _option(text, "autosave_on_changes") not in (None, "false"):
        raise WearlineError(
            "the shipped Mosquitto configuration must persist and save on a timer "
            "(persistence true, autosave_on_changes false)"
        )
    seconds = 1800 if interval is None else int(interval)  # Mosquitto's default
    if seconds <= 0:
        raise WearlineError("the shipped Mosquitto configuration must save on a timer (autosave_interval > 0)")
    return float(seconds + 2)


class LocalBroker:
    """Mosquitto with the shipped delivery settings on a free local port, its snapshot in a folder of its own under
    ``work``, for the benchmarks, the soak and the tests: started, stopped with any signal (SIGTERM saves, SIGKILL
    does not) and started again on the same port and data. Without ``auth``, the test-only anonymous listener.

    Mosquitto started as root drops to its own user, which must reach and write its snapshot: ``work`` is made
    traversable and the data folder writable; a broker that cannot save says so only in its log (:meth:`saved_ok`).
    """

    def __init__(self, work: Path, *, auth: LocalAuth | None = None, verbose: bool = False) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).is_file():
            raise WearlineError("mosquitto is not installed (looked on PATH and at /usr/sbin/mosquitto)")
        conf = shipped("mosquitto/wearline.conf")
        if not conf.is_file():
            raise WearlineError(f"the shipped Mosquitto configuration is not at {conf}")
        text = conf.read_text()
        self.save_period_s = _save_period_s(text)
        os.chmod(work, 0o755)  # noqa: S103 (the broker's own user reads its configuration here)
        self.data = work / "mosquitto-data"
        self.data.mkdir(exist_ok=True)
        os.chmod(self.data, 0o777)  # noqa: S103 (and writes its snapshot here)
        self.port = free_port()
        self.ports = [self.port] + ([auth.tls.port] if auth is not None and auth.tls is not None else [])
        self.conf = work / "mosquitto.conf"
        self.conf.write_text(local_broker_config(text, port=self.port, persistence=self.data, auth=auth))
        self.log = work / "mosquitto.log"
        self._argv = [binary, "-c", str(self.conf), *(["-v"] if verbose else [])]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the broker and return once every listener accepts connections."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self._argv, stdout=out, stderr=out)  # noqa: S603 (our binary and file)
        deadline = time.monotonic() + timeout_s
        for port in self.ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        tail = self.log.read_text(errors="replace")[-1000:]
                        raise WearlineError(f"mosquitto did not start on port {port}: {tail}") from None
                    time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 120.0) -> None:
        """Send ``sig`` and wait for the broker to end (a clean stop writes the whole queue first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout_s)
        self.proc = None

    def close(self) -> None:
        """Kill the broker if it still runs (nothing is saved)."""
        self.stop(signal.SIGKILL)

    def saved_ok(self) -> bool:
        """No failed save in the broker's log (a broker that cannot save keeps nothing across a restart)."""
        return "Error saving" not in self.log.read_text(errors="replace")
