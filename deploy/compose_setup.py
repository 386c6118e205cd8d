"""Compose's one-shot setup job, run as the database owner before any stage starts (deploy/compose.yaml):

1. migrates the schema (``wearline db migrate``: the group roles and their grants included);
2. gives each stage, and Grafana (readonly), a login of its own, a member of its group role, with the password
   deploy/secrets.sh generated (``SETUP_<STAGE>_PASSWORD``) and the schema as its search_path; a password changed
   there is applied on the next run;
3. registers the stages' broker account (``wearline gateways add stages --service``) when it has none, and writes
   its user name and password where the stages read their settings (``--mqtt-credentials``, a TOML file: the
   password is shown once, so it is kept in that file only);
4. writes Mosquitto's password and ACL files from the registry (``--broker-dir``); the broker reads them at start.

Safe to run again: each step does only what is missing. Usage: python compose_setup.py --broker-dir DIR
--mqtt-credentials FILE
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TextIO

from psycopg import sql

from ingest import add_gateway, list_gateways, revoke_gateway, write_broker_files
from wearline.db import connect, migrate
from wearline.errors import WearlineError
from wearline.settings import load_settings

SERVICE_ACCOUNT = "stages"
# stage -> its group role (created by `wearline db migrate`); its login is the role's name + "_login".
STAGES = {
    "ingest": "wearline_ingest",
    "analytics": "wearline_analytics",
    "alerts": "wearline_alerts",
    "api": "wearline_api",
    "readonly": "wearline_readonly",
}


def say(line: str, *, to: TextIO = sys.stdout) -> None:
    to.write(line + "\n")
    to.flush()


def _write_credentials(path: Path, secret: str) -> None:
    """The stages' settings file with the account's password: readable by their user only, replaced atomically."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f'[mqtt]\nusername = "{SERVICE_ACCOUNT}"\npassword = "{secret}"\n')
    tmp.replace(path)


async def setup(broker_dir: Path, credentials: Path, *, have_credentials: bool) -> None:
    settings = load_settings()
    applied = await migrate(settings.database)
    say(f"migrations applied: {applied or 'none (up to date)'}")
    async with await connect(settings.database, autocommit=True) as conn:
        for stage, group in STAGES.items():
            password = os.environ.get(f"SETUP_{stage.upper()}_PASSWORD")
            if not password:
                raise WearlineError(f"SETUP_{stage.upper()}_PASSWORD is not set: run deploy/secrets.sh")
            login = sql.Identifier(f"{group}_login")
            cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [f"{group}_login"])
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(login, sql.Identifier(group)))
            # ALTER ROLE takes no bind parameters; the literal is quoted by psycopg.
            await conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(login, sql.Literal(password)))
            # The dashboards' SQL (Grafana, as the readonly login) names no schema.
            schema = sql.Identifier(settings.database.schema_name)
            await conn.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(login, schema))
            say(f"login {group}_login: member of {group}")
        async with conn.transaction():
            live = {g.name for g in await list_gateways(conn, live_only=True)}
            if SERVICE_ACCOUNT not in live or not have_credentials:
                # Its password exists nowhere else: without the file, a new account is the only way back in.
                if SERVICE_ACCOUNT in live:
                    await revoke_gateway(conn, SERVICE_ACCOUNT)
                _, secret = await add_gateway(conn, name=SERVICE_ACCOUNT, service=True)
                assert secret is not None
                _write_credentials(credentials, secret)
                say(f"broker account {SERVICE_ACCOUNT}: created, credentials in {credentials}")
            else:
                say(f"broker account {SERVICE_ACCOUNT}: exists")
            gateways = await list_gateways(conn, live_only=True)
        write_broker_files(
            gateways, settings.topic_prefix, password_file=broker_dir / "passwd", acl_file=broker_dir / "acl"
        )
        say(f"broker files: {broker_dir / 'passwd'}, {broker_dir / 'acl'} ({len(gateways)} account(s))")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker-dir", type=Path, required=True)
    parser.add_argument("--mqtt-credentials", type=Path, required=True)
    args = parser.parse_args()
    try:
        have = args.mqtt_credentials.exists()
        asyncio.run(setup(args.broker_dir, args.mqtt_credentials, have_credentials=have))
    except WearlineError as exc:
        say(f"error: {exc}", to=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
