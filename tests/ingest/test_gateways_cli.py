"""`wearline gateways add|list|revoke|files` as an operator runs it, its mistakes each one line, and the MQTT TLS
settings refusing what cannot work at start-up, naming the setting."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TEST_DSN, make_settings, unique
from tests.ingest._support import connect_db
from wearline.cli import app
from wearline.settings import SettingsError


def _run(schema: str, prefix: str, *args: str) -> Done:
    """The command in this process, through the app the installed ``wearline`` runs (a process costs 3 s)."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WEARLINE_")}
    env |= {
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_DATABASE__STORAGE": "native",
        "WEARLINE_TOPIC_PREFIX": prefix,
    }
    result = CliRunner().invoke(app, list(args), env=env)
    print(f"$ wearline {' '.join(args)} -> exit {result.exit_code}\n{result.stdout}{result.stderr}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def _error(done: Done) -> str:
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_gateways_add_list_revoke_and_the_broker_files(schema: str, tmp_path: Path) -> None:
    prefix = unique("wlt-gw-")
    never = _error(_run(schema, prefix, "gateways", "list"))
    assert "wearline db migrate" in never
    assert _run(schema, prefix, "db", "migrate").returncode == 0

    added = _run(schema, prefix, "gateways", "add", "gw-a", "--tenant", "acme", "--site", "plant1")
    assert added.returncode == 0
    lines = added.stdout.splitlines()
    assert lines[0] == "#1 gw-a: gateway for acme/plant1"
    password = lines[2]
    assert len(password) >= 32
    assert _run(schema, prefix, "gateways", "add", "ingest", "--service").returncode == 0
    cert = _run(schema, prefix, "gateways", "add", "gw-c", "--tenant", "beta", "--site", "s1", "--certificate-only")
    assert "CN=gw-c" in cert.stdout

    for args, words in [
        (("add", "gw-a", "--tenant", "acme", "--site", "plant1"), "exists; revoke it first"),
        (("add", "bad/name", "--tenant", "acme", "--site", "plant1"), "'bad/name' must be 1-64"),
        (("add", "gw-x", "--tenant", "acme"), "needs --tenant and --site"),
        (("add", "gw-x", "--tenant", "a+b", "--site", "s"), "tenant 'a+b' must be"),
        (("add", "svc", "--service", "--tenant", "acme"), "give no --tenant/--site"),
        (("revoke", "gw-nobody"), "no live gateway 'gw-nobody'"),
        (("files", "--password-file", str(tmp_path / "no" / "passwd"), "--acl-file", str(tmp_path / "acl")),
         "directory"),
        (("revoke", "gw-c", "--password-file", str(tmp_path / "passwd")), "give both --password-file and --acl-file"),
    ]:  # fmt: skip
        assert words in _error(_run(schema, prefix, "gateways", *args))

    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    revoked = _run(schema, prefix, "gateways", "revoke", "gw-c", "--password-file", str(passwd), "--acl-file", str(acl))
    assert revoked.returncode == 0
    assert "SIGHUP" in revoked.stdout
    listed = _run(schema, prefix, "gateways", "list").stdout.splitlines()
    assert [line.split()[:3] for line in listed] == [
        ["#1", "gw-a", "acme/plant1"],
        ["#2", "ingest", "service"],
        ["#3", "gw-c", "beta/s1"],
    ]
    assert "revoked" in listed[2]
    assert "live" in listed[0]
    entries = passwd.read_text().splitlines()
    assert [e.split(":")[0] for e in entries] == ["gw-a", "ingest"]
    assert all(e.split(":", 1)[1].startswith("$7$101$") for e in entries)
    assert password not in passwd.read_text()
    assert oct(passwd.stat().st_mode & 0o777) == "0o640"
    rules = acl.read_text()
    assert f"user gw-a\ntopic write {prefix}/acme/plant1/+/+/telemetry\n" in rules
    assert "user gw-c\n" not in rules  # the user line: a random prefix may contain "gw-c" too
    assert "pattern" not in rules.replace("No pattern lines", "")
    with connect_db(schema) as conn:
        hashes = conn.execute("SELECT count(*) FROM gateways WHERE password_hash LIKE '$7$%'").fetchone()
    assert hashes == (2,)
    # A revoked name may be given again, and the files follow.
    assert _run(schema, prefix, "gateways", "add", "gw-c", "--tenant", "beta", "--site", "s2").returncode == 0
    assert (
        _run(schema, prefix, "gateways", "files", "--password-file", str(passwd), "--acl-file", str(acl)).returncode
        == 0
    )
    assert f"topic write {prefix}/beta/s2/+/+/telemetry" in acl.read_text()


def test_tls_settings_that_cannot_work_fail_at_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"mqtt.key_file is set but mqtt.tls is false"):
        make_settings("wlt_x", "wlt/x", mqtt={"key_file": str(tmp_path / "k.pem")})
    with pytest.raises(SettingsError, match=r"mqtt.key_file is set without mqtt.cert_file"):
        make_settings("wlt_x", "wlt/x", mqtt={"tls": True, "key_file": str(tmp_path / "k.pem")})
    missing = make_settings("wlt_x", "wlt/x", mqtt={"tls": True, "cert_file": str(tmp_path / "absent.pem")})
    with pytest.raises(SettingsError, match=r"mqtt.cert_file/mqtt.key_file .*absent.pem"):
        missing.mqtt.ssl_context()
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    bad_ca = make_settings("wlt_x", "wlt/x", mqtt={"tls": True, "ca_file": str(tmp_path / "ca.pem")})
    with pytest.raises(SettingsError, match=r"mqtt.ca_file .*ca.pem"):
        bad_ca.mqtt.ssl_context()
    assert make_settings("wlt_x", "wlt/x").mqtt.ssl_context() is None
    insecure = make_settings("wlt_x", "wlt/x", mqtt={"tls": True, "tls_verify": False}).mqtt.ssl_context()
    assert insecure is not None
    assert not insecure.check_hostname
