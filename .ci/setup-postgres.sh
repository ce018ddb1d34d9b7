#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the tests and exports
# ARX_TEST_POSTGRES (a role that may create databases: each test makes its
# own). Source it: `. .ci/setup-postgres.sh`; it stops the cluster when the
# shell that sourced it exits. Runs as root (CI) or as any user that can run
# initdb; as root the cluster runs as the postgres user.
#
# PostgreSQL comes from Debian's packages, installed when missing.

_arx_pg_setup() {
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "== installing PostgreSQL from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi

  local dir as=()
  dir=$(mktemp -d /tmp/arx-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log"; return 1; }
  # Tests create and drop many small databases: let them, on a small machine.
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 128MB
EOF
  # A free port on 127.0.0.1, below the kernel's range for outgoing
  # connections (one of those can hold a port that nothing answers on);
  # another when the server still finds it taken.
  local port lo=32768 attempt started=
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$lo" -gt 21000 ] 2>/dev/null || lo=40001
  for attempt in 1 2 3 4 5; do
    for port in $(shuf -i 20000-$((lo - 1)) -n 50); do
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
      fi
    done
    echo "port = $port" >>"$dir/data/postgresql.conf" # the last one counts
    if "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
      started=1
      break
    fi
    grep -q "Address already in use" "$dir/server.log" || break
    echo "== PostgreSQL: port $port is taken (attempt $attempt), trying another"
  done
  [ -n "$started" ] || { cat "$dir/server.log"; return 1; }

  local psql=("${as[@]}" "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres)
  "${psql[@]}" -c "CREATE ROLE arx LOGIN PASSWORD 'arx' CREATEDB CREATEROLE" &&
    "${psql[@]}" -c "CREATE DATABASE arx OWNER arx" || return 1

  export ARX_TEST_POSTGRES="postgres://arx:arx@127.0.0.1:$port/arx?sslmode=disable"
  _ARX_PG_STOP=("${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop)
  _ARX_PG_DIR=$dir
  echo "== PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (ARX_TEST_POSTGRES)"
}

_arx_pg_stop() {
  if [ -n "${_ARX_PG_DIR:-}" ]; then
    "${_ARX_PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$_ARX_PG_DIR"
    _ARX_PG_DIR=
  fi
}

if _arx_pg_setup; then
  # Keep an EXIT trap another setup script set.
  _arx_pg_prev_exit="$(trap -p EXIT)"
  _arx_pg_prev_exit="${_arx_pg_prev_exit#trap -- \'}"
  _arx_pg_prev_exit="${_arx_pg_prev_exit%\' EXIT}"
  trap "_arx_pg_stop; $_arx_pg_prev_exit" EXIT
else
  echo "setup-postgres: could not start PostgreSQL" >&2
  return 1 2>/dev/null || exit 1
fi
