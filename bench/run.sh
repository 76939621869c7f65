#!/usr/bin/env bash
# Benchmark of the dcr handler against baselines measured in the same run,
# on loopback, with bounded durations. Every process the script starts is
# stopped on exit.
#
# Scenarios and their baselines:
#   registration (201, durable)        vs a static `respond` 201 of a
#   registration, 1,000,000 stored        registration-sized JSON body
#   RFC 7592 read (200)
#   registration + a reader process
#   token request through enforcement  vs the same request through a plain
#                                         reverse_proxy to the same backend
#   registration with a webhook hook   vs static, and vs no hook
#   registration, PostgreSQL store     vs static, and vs the bbolt store
#                                         (needs PostgreSQL's initdb and
#                                         pg_ctl; skipped without them)
#
# It also reports Caddy's start-up time (launch to the first 201 from the
# large store) and its resident memory before and after the large-store
# scenario.
#
#   bash bench/run.sh            # 10 s per scenario, 32 connections
#   DURATION=5s CONNS=16 SEED=100000 bash bench/run.sh
#   PG_BIN=/usr/lib/postgresql/15/bin PG_PORT=54339 bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
SEED=${SEED:-1000000}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# A private PostgreSQL server for the PostgreSQL store's scenario, with
# its defaults (fsync and synchronous_commit on), run as the postgres user
# when we are root, as PostgreSQL refuses to run as root.
PG_PORT=${PG_PORT:-54339}
pg_bin=${PG_BIN:-}
if [ -z "$pg_bin" ] && command -v initdb >/dev/null; then
	pg_bin=$(dirname "$(readlink -f "$(command -v initdb)")")
fi
if [ -z "$pg_bin" ]; then
	pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
pg_as_owner() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_dsn=
if [ -n "$pg_bin" ] && [ -x "$pg_bin/pg_ctl" ]; then
	mkdir -p "$work/pg"
	[ "$(id -u)" -ne 0 ] || chown postgres: "$work/pg"
	chmod 755 "$work"
	pg_as_owner "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust \
		--no-sync > "$work/pg/initdb.log"
	pg_as_owner "$pg_bin/pg_ctl" start -D "$work/pg/data" -w -l "$work/pg/log" \
		-o "-p $PG_PORT -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200" \
		> /dev/null
	pg_stop() { pg_as_owner "$pg_bin/pg_ctl" stop -D "$work/pg/data" -m fast > /dev/null || true; }
	trap 'pg_stop; cleanup' EXIT
	pg_dsn="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
else
	echo "no PostgreSQL binaries (set PG_BIN): the PostgreSQL scenario is skipped" >&2
fi

go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/load" ./bench/load
go build -o "$work/reader" ./bench/reader
go build -o "$work/seed" ./bench/seed
"$work/seed" -store "$work/big.db" -n "$SEED" >&2

cat > "$work/Caddyfile" <<CADDY
{
	admin localhost:2119
	auto_https off
	log {
		level ERROR
	}
}
# The gateway: registration, management and enforcement at /oauth/token.
http://127.0.0.1:8119 {
	dcr {
		store $work/clients.db
		rate_limit off
		enforce {
			token /oauth/token
		}
	}
	respond /static 201 {
		body \`{"client_id":"xxxxxxxxxxxxxxxxxxxxxx","client_id_issued_at":1796314153,"client_secret":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","client_secret_expires_at":0,"redirect_uris":["http://127.0.0.1:3000/callback"],"token_endpoint_auth_method":"client_secret_basic","grant_types":["authorization_code"],"response_types":["code"],"client_name":"bench"}\`
	}
	reverse_proxy 127.0.0.1:8120
}
# A stand-in for the OAuth backend.
http://127.0.0.1:8120 {
	respond \`{"access_token":"x","token_type":"Bearer"}\` 200
}
# The same backend behind a plain reverse_proxy: the enforcement baseline.
http://127.0.0.1:8121 {
	reverse_proxy 127.0.0.1:8120
}
# The same registration endpoint with a webhook: every registration also
# queues an event in the store, delivered to the receiver below.
http://127.0.0.1:8124 {
	dcr {
		store $work/hooked.db
		rate_limit off
		hook webhook http://127.0.0.1:8125/events {
			secret bench-webhook-signing-key-0123456789
		}
	}
}
# The webhook receiver.
http://127.0.0.1:8125 {
	respond 204
}
# The same registration endpoint on a store of $SEED clients.
http://127.0.0.1:8122 {
	dcr {
		store $work/big.db
		rate_limit off
	}
}
CADDY
if [ -n "$pg_dsn" ]; then
	# The pool is as large as the load's connections, so that every
	# request has a connection and commits can share WAL flushes.
	cat >> "$work/Caddyfile" <<CADDY
# The same registration endpoint on the PostgreSQL store.
http://127.0.0.1:8123 {
	dcr {
		store postgres "$pg_dsn" {
			max_conns $CONNS
		}
		rate_limit off
	}
}
CADDY
fi
started=$(date +%s%N)
"$work/caddy" run --config "$work/Caddyfile" > "$work/caddy.log" 2>&1 &
caddy_pid=$!
pids+=($caddy_pid)
reg_body='{"redirect_uris":["http://127.0.0.1:3000/callback"],"client_name":"bench"}'
for _ in $(seq 1000); do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
		-d "$reg_body" http://127.0.0.1:8122/register || true)
	[ "$code" = 201 ] && break
	sleep 0.01
done
startup_ms=$(( ($(date +%s%N) - started) / 1000000 ))
rss() { awk -v k="$1:" '$1 == k { printf "%d MB", $2 / 1024 }' "/proc/$caddy_pid/status"; }
# Caddy's CPU time so far in ms (utime + stime, in clock ticks of 10 ms).
cpu_ms() { awk '{ print ($14 + $15) * 10 }' "/proc/$caddy_pid/stat"; }
# The sum and count of a histogram on Caddy's /metrics.
metric() { curl -s http://localhost:2119/metrics | awk -v m="$1" '$1 == m { print $2 }'; }

base=http://127.0.0.1:8119
run() { "$work/load" -c "$CONNS" -d "$DURATION" "$@"; }
rps() { sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$1"; }
ratio() { awk -v a="$(rps "$1")" -v b="$(rps "$2")" 'BEGIN { printf "%.2f", a / b }'; }

# One client to read through RFC 7592 and to authenticate at the token
# endpoint.
reg=$(curl -s -H 'Content-Type: application/json' \
	-d '{"redirect_uris":["http://127.0.0.1:3000/callback"],"client_name":"bench"}' \
	"$base/register")
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$reg"; }
id=$(field client_id)
secret=$(field client_secret)
token=$(field registration_access_token)
basic=$(printf '%s:%s' "$id" "$secret" | base64 -w0)
form="grant_type=authorization_code&code=x&redirect_uri=http%3A%2F%2F127.0.0.1%3A3000%2Fcallback"

echo "# $(date -u +%FT%TZ) $(nproc) cores, $CONNS connections, $DURATION per scenario"
cpub0=$(cpu_ms)
b=$(run -label static-201 -url "$base/static")
cpub1=$(cpu_ms)
cpu0=$(cpu_ms)
commits0=$(metric caddy_dcr_store_commit_changes_count)
changes0=$(metric caddy_dcr_store_commit_changes_sum)
fsync0=$(metric caddy_dcr_store_commit_duration_seconds_sum)
r1=$(run -label register -url "$base/register")
cpu1=$(cpu_ms)
commits1=$(metric caddy_dcr_store_commit_changes_count)
changes1=$(metric caddy_dcr_store_commit_changes_sum)
fsync1=$(metric caddy_dcr_store_commit_duration_seconds_sum)
rss_before=$(rss VmRSS)
rbig=$(run -label "register-$SEED-stored" -url http://127.0.0.1:8122/register)
rss_after=$(rss VmRSS)
rss_peak=$(rss VmHWM)
rd=$(run -label rfc7592-read -method GET -status 200 -body '' \
	-H "Authorization: Bearer $token" -url "$base/register/$id")
"$work/reader" -store "$work/clients.db" -d "$DURATION" > "$work/reader.out" &
rp=$!
pids+=($rp)
r2=$(run -label register+reader -url "$base/register")
wait "$rp"
reader=$(cat "$work/reader.out")
rhook=$(run -label register-webhook -url http://127.0.0.1:8124/register)
delivered=$(metric 'caddy_dcr_hook_deliveries_total{hook="webhook",outcome="delivered"}')
rpg=
if [ -n "$pg_dsn" ]; then
	rpg=$(run -label register-postgres -url http://127.0.0.1:8123/register)
fi
pb=$(run -label proxy-token -status 200 -type application/x-www-form-urlencoded \
	-body "$form" -H "Authorization: Basic $basic" \
	-url http://127.0.0.1:8121/oauth/token)
pe=$(run -label enforced-token -status 200 -type application/x-www-form-urlencoded \
	-body "$form" -H "Authorization: Basic $basic" -url "$base/oauth/token")

printf '%s\n' "$b"
printf '%s\tratio=%s\n' "$r1" "$(ratio "$r1" "$b")"
printf '%s\tratio=%s\tvs-empty=%s\n' "$rbig" "$(ratio "$rbig" "$b")" "$(ratio "$rbig" "$r1")"
printf '%s\tratio=%s\tvs-no-hook=%s\tdelivered-by-end=%s\n' "$rhook" "$(ratio "$rhook" "$b")" \
	"$(ratio "$rhook" "$r1")" "${delivered:-0}"
if [ -n "$rpg" ]; then
	printf '%s\tratio=%s\tvs-bbolt=%s\n' "$rpg" "$(ratio "$rpg" "$b")" "$(ratio "$rpg" "$r1")"
fi
printf '%s\tratio=%s\n' "$rd" "$(ratio "$rd" "$b")"
printf '%s\tratio=%s\n' "$r2" "$(ratio "$r2" "$b")"
printf '%s\n' "$reader"
printf '%s\n' "$pb"
printf '%s\tratio=%s\n' "$pe" "$(ratio "$pe" "$pb")"
printf 'caddy\tstartup-to-first-201=%dms (store of %s clients)\trss-before-large=%s\trss-after-large=%s\trss-peak=%s\n' \
	"$startup_ms" "$SEED" "$rss_before" "$rss_after" "$rss_peak"
# Where registration's time goes: Caddy's CPU per request against the
# static baseline's, and the group commits (changes each, time each).
ok() { sed -n 's/.*ok=\([0-9]*\).*/\1/p' <<<"$1"; }
awk -v sb="$((cpub1 - cpub0))" -v nb="$(ok "$b")" -v sr="$((cpu1 - cpu0))" -v nr="$(ok "$r1")" \
	-v c="$(awk -v a="$commits0" -v b="$commits1" 'BEGIN { print b - a }')" \
	-v ch="$(awk -v a="$changes0" -v b="$changes1" 'BEGIN { print b - a }')" \
	-v fs="$(awk -v a="$fsync0" -v b="$fsync1" 'BEGIN { print b - a }')" -v d="${DURATION%s}" \
	'BEGIN { printf "cost\tcaddy-cpu-per-static=%.0fµs\tcaddy-cpu-per-register=%.0fµs\tcommits=%d\tchanges-per-commit=%.1f\tcommit-time=%.2fms\tcommit-busy=%.0f%%\n", sb * 1000 / nb, sr * 1000 / nr, c, ch / c, fs * 1000 / c, fs * 100 / d }'
