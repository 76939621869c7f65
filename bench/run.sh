#!/usr/bin/env bash
# Benchmark: registrations per second against Caddy answering a static
# 201 on the same server, with and without a concurrent reader process.
# Everything runs on loopback with bounded durations; every process the
# script starts is stopped on exit.
#
#   bash bench/run.sh            # 10 s per scenario, 32 connections
#   DURATION=5s CONNS=16 bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/load" ./bench/load
go build -o "$work/reader" ./bench/reader

cat > "$work/Caddyfile" <<CADDY
{
	admin localhost:2119
	auto_https off
	log {
		level ERROR
	}
}
http://127.0.0.1:8119 {
	dcr {
		store $work/clients.db
	}
	respond /static 201 {
		body \`{"client_id":"xxxxxxxxxxxxxxxxxxxxxx","client_id_issued_at":1796314153,"client_secret":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","client_secret_expires_at":0,"redirect_uris":["http://127.0.0.1:3000/callback"],"token_endpoint_auth_method":"client_secret_basic","grant_types":["authorization_code"],"response_types":["code"],"client_name":"bench"}\`
	}
}
CADDY
"$work/caddy" run --config "$work/Caddyfile" > "$work/caddy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	curl -s -o /dev/null http://127.0.0.1:8119/static && break
	sleep 0.1
done

base=http://127.0.0.1:8119
run() { "$work/load" -c "$CONNS" -d "$DURATION" "$@"; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $CONNS connections, $DURATION per scenario"
b=$(run -label baseline -url "$base/static")
r1=$(run -label register -url "$base/register")
"$work/reader" -store "$work/clients.db" -d "$DURATION" > "$work/reader.out" &
rp=$!
pids+=($rp)
r2=$(run -label register+reader -url "$base/register")
wait "$rp"
rd=$(cat "$work/reader.out")

rps() { sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$1"; }
ratio() { awk -v a="$(rps "$1")" -v b="$(rps "$b")" 'BEGIN { printf "%.2f", a / b }'; }
printf '%s\n%s\tratio=%s\n%s\tratio=%s\n%s\n' \
	"$b" "$r1" "$(ratio "$r1")" "$r2" "$(ratio "$r2")" "$rd"
