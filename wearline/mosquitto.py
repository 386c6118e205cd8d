"""Mosquitto's file formats, written from Python: the shipped configuration turned into one for a broker of our own
(tests, benchmarks, the soak), and password-file entries in ``mosquitto_passwd``'s PBKDF2-SHA512 format.

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
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalAuth", "LocalTls", "local_broker_config", "password_entry"]

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
