#!/usr/bin/env bash
# Make sure a PostgreSQL is reachable and print a URL for the tests and the bench on stdout (messages go to
# stderr). The tests create a database of their own on it (tvg_test_<id>) and drop it afterwards.
# Order: $TEST_POSTGRES_URL if set; a server already on 127.0.0.1:5432; the local cluster, started with
# pg_ctlcluster; otherwise explain how to get one and fail.
set -euo pipefail

say() { echo "postgres: $*" >&2; }
local_url="postgresql://postgres@127.0.0.1:5432/postgres"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/5432") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do
    if port_open; then return 0; fi
    sleep 0.5
  done
  return 1
}

usable() {  # a connection works (psql when installed; else the open port has to do)
  if command -v psql >/dev/null 2>&1; then
    psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
  else
    port_open
  fi
}

if [[ -n "${TEST_POSTGRES_URL:-}" ]]; then
  say "using TEST_POSTGRES_URL from the environment"
  echo "$TEST_POSTGRES_URL"
  exit 0
fi

if ! port_open && command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  say "starting the local PostgreSQL $version cluster 'main'"
  if [[ $(id -u) -eq 0 ]]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  else
    sudo -n pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  wait_port || { say "PostgreSQL did not open port 5432 within 30 s; see /var/log/postgresql/"; exit 1; }
fi

if port_open; then
  if usable "$local_url"; then
    say "PostgreSQL answers on 127.0.0.1:5432"
    echo "$local_url"
    exit 0
  fi
  say "PostgreSQL answers on 127.0.0.1:5432 but user postgres cannot log in without a password;"
  say "set TEST_POSTGRES_URL=postgresql://USER:PASSWORD@127.0.0.1:5432/postgres (a user that may CREATE DATABASE)"
  exit 1
fi

cat >&2 <<'MSG'
postgres: no PostgreSQL found. Any one of these works:
  - install it:      sudo apt-get install postgresql   (Debian/Ubuntu), then run this again
  - point at one:    export TEST_POSTGRES_URL=postgresql://user:password@host:5432/postgres
MSG
exit 1
