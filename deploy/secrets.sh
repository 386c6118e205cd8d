#!/usr/bin/env sh
# Generates the credentials deploy/compose.yaml reads, once, into deploy/secrets/ (git-ignored; nothing secret is
# committed): the database owner's password and one login per stage, Grafana's admin password and its read-only
# database login, and a CA with the broker's TLS certificate. Needs openssl. Run it before the first
#   docker compose -f deploy/compose.yaml up --build
# It never overwrites a file: to rotate one credential, delete its file(s) and run it again (docs/operations.md).
set -eu
umask 077
cd "$(dirname "$0")"
dir=secrets
mkdir -p "$dir/tls"
chmod 700 "$dir"

secret() { openssl rand -hex 24; }
write() {  # write FILE (from stdin) unless it exists
  if [ -e "$1" ]; then cat >/dev/null; echo "kept    $1"; else cat >"$1"; echo "created $1"; fi
}

# One password per login, kept in files of their own so that the env files below can be written again from them.
for login in owner ingest analytics alerts api readonly grafana_admin; do
  [ -e "$dir/$login.password" ] || secret >"$dir/$login.password"
done
pw() { cat "$dir/$1.password"; }
dsn() { echo "postgresql://$1:$2@db:5432/wearline"; }

write "$dir/db.env" <<EOF
POSTGRES_USER=wearline
POSTGRES_DB=wearline
POSTGRES_PASSWORD=$(pw owner)
EOF
# The setup job migrates as the owner and gives each stage a login of its own (members of the group roles
# wearline db migrate creates), with these passwords.
write "$dir/setup.env" <<EOF
WEARLINE_DATABASE__DSN=$(dsn wearline "$(pw owner)")
SETUP_INGEST_PASSWORD=$(pw ingest)
SETUP_ANALYTICS_PASSWORD=$(pw analytics)
SETUP_ALERTS_PASSWORD=$(pw alerts)
SETUP_API_PASSWORD=$(pw api)
SETUP_READONLY_PASSWORD=$(pw readonly)
EOF
for stage in ingest analytics alerts api; do
  write "$dir/$stage.env" <<EOF
WEARLINE_DATABASE__DSN=$(dsn "wearline_${stage}_login" "$(pw "$stage")")
EOF
done
# Grafana: its admin, and the dashboards' read-only login (role wearline_readonly) for a PostgreSQL data source.
write "$dir/grafana.env" <<EOF
GF_SECURITY_ADMIN_PASSWORD=$(pw grafana_admin)
WEARLINE_GRAFANA_DB_USER=wearline_readonly_login
WEARLINE_GRAFANA_DB_PASSWORD=$(pw readonly)
EOF

# The broker's TLS listener (8883): a CA of this installation and a server certificate for the names gateways use.
# Gateways trust ca.crt; put your own PKI's files here instead if you have one.
if [ ! -e "$dir/tls/server.crt" ]; then
  names=${BROKER_NAMES:-DNS:mosquitto,DNS:localhost,IP:127.0.0.1}
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=Wearline broker CA" \
    -keyout "$dir/tls/ca.key" -out "$dir/tls/ca.crt" 2>/dev/null
  openssl req -newkey rsa:3072 -nodes -subj "/CN=mosquitto" \
    -keyout "$dir/tls/server.key" -out "$dir/tls/server.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "$names" >"$dir/tls/server.ext"
  openssl x509 -req -in "$dir/tls/server.csr" -CA "$dir/tls/ca.crt" -CAkey "$dir/tls/ca.key" -CAcreateserial \
    -days 825 -extfile "$dir/tls/server.ext" -out "$dir/tls/server.crt" 2>/dev/null
  rm -f "$dir/tls/server.csr" "$dir/tls/server.ext"
  echo "created $dir/tls/ (ca.crt for gateways; server.crt for $names)"
else
  echo "kept    $dir/tls/"
fi
