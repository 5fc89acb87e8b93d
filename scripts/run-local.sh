#!/usr/bin/env bash
# run-local.sh — what `make run` runs.
#
# By default: the bench's default scenario (configs/bench/default.yaml), one
# repeat: round-robin, least-request, epp with GIE's default config and epp
# with fastepp's recommended config, each on a fresh simulated fleet with the
# same shared-prefix workload and rate ladder. It builds the binaries into
# ./bin, runs bin/bench, prints the table and where summary.json and
# report.html are (bench-results/<scenario>/). Everything runs in one
# process on 127.0.0.1; nothing is left running.
#
# Knobs (environment), bench mode:
#   GO=go                 Go command used to build
#   BIN=bin               where the binaries go
#   SCENARIO=default      a scenario name (bin/bench --list) or a scenario file
#   STRATEGIES=           comma-separated strategies (default: the scenario's)
#   REPEATS=1             runs per strategy (the README's table uses 3)
#   OUTPUT=bench-results/<scenario>   results directory
#   BENCH_FLAGS           extra bench flags, split on spaces
#
# STACK=1 runs the previous local stack instead: the real binaries as separate
# processes (simulator fleet, epp, gateway) and one loadgen run through them,
# logs and results under out/. Its knobs:
#   SERVERS=4             simulated servers
#   GPU=mi300x            simulator GPU profile
#   MODEL_PROFILE=llama-3.1-8b   simulator model profile
#   LOADGEN_CONFIG=configs/loadgen/local-stack.yaml   workload (its server.base_url is replaced)
#   OUT_DIR=out/local-stack-<UTC time>   results and logs
#   EPP_TLS=0             1: epp serves ext_proc over TLS (self-signed), the gateway dials with --epp-tls
#   DIRECT=0              1: no epp, the gateway balances over the fleet by itself (BALANCE)
#   BALANCE=round-robin   with DIRECT=1: round-robin, random or least-request
#   EPP_FLAGS, GATEWAY_FLAGS, SIMULATOR_FLAGS, LOADGEN_FLAGS   extra flags, split on spaces
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in curl awk sed grep; do
	command -v "$tool" >/dev/null || { echo "run-local.sh: needs $tool on PATH (Debian: apt-get install $tool)" >&2; exit 1; }
done

GO=${GO:-go}
BIN=${BIN:-bin}

if [[ ${STACK:-0} != 1 ]]; then
	if [[ -n ${DIRECT:-} && ${DIRECT:-0} != 0 ]]; then
		echo "run-local: DIRECT=1 now needs STACK=1: make run compares round-robin and epp side by side;" >&2
		echo "           STRATEGIES=round-robin make run runs the round-robin baseline alone" >&2
		exit 2
	fi
	SCENARIO=${SCENARIO:-default}
	REPEATS=${REPEATS:-1}
	read -r -a BENCH_EXTRA <<<"${BENCH_FLAGS:-}"
	args=(--scenario "$SCENARIO" --repeats "$REPEATS")
	[[ -n ${STRATEGIES:-} ]] && args+=(--strategies "$STRATEGIES")
	[[ -n ${OUTPUT:-} ]] && args+=(--output "$OUTPUT")
	printf '==> building bench, epp, simulator, gateway, loadgen into %s/\n' "$BIN"
	"$GO" build -o "$BIN/" ./cmd/bench ./cmd/epp ./cmd/simulator ./cmd/gateway ./cmd/loadgen
	printf '==> %s/bench %s\n' "$BIN" "${args[*]} ${BENCH_EXTRA[*]:-}"
	exec "$BIN/bench" "${args[@]}" ${BENCH_EXTRA[@]+"${BENCH_EXTRA[@]}"}
fi
SERVERS=${SERVERS:-4}
GPU=${GPU:-mi300x}
MODEL_PROFILE=${MODEL_PROFILE:-llama-3.1-8b}
LOADGEN_CONFIG=${LOADGEN_CONFIG:-configs/loadgen/local-stack.yaml}
OUT_DIR=${OUT_DIR:-out/local-stack-$(date -u +%Y%m%d-%H%M%S)}
EPP_TLS=${EPP_TLS:-0}
DIRECT=${DIRECT:-0}
read -r -a EPP_EXTRA <<<"${EPP_FLAGS:-}"
read -r -a GATEWAY_EXTRA <<<"${GATEWAY_FLAGS:-}"
read -r -a SIMULATOR_EXTRA <<<"${SIMULATOR_FLAGS:-}"
read -r -a LOADGEN_EXTRA <<<"${LOADGEN_FLAGS:-}"

LOGS="$OUT_DIR/logs"
PIDS=()

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'run-local: %s\n' "$*" >&2
	exit 1
}

# cleanup stops what this script started, newest first: SIGTERM, then
# SIGKILL for anything still alive after 5 s.
cleanup() {
	local code=$? pid i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill -TERM "${PIDS[i]}" 2>/dev/null || true
	done
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if ((${#PIDS[@]} > 0)); then
		say "stack stopped (logs in $LOGS)"
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# http_get URL prints the body of a GET (curl when present, else bash's
# /dev/tcp with HTTP/1.0); fails on a non-2xx status.
http_get() {
	local url=$1
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --max-time 5 "$url"
		return
	fi
	local rest=${url#http://} hostport path
	hostport=${rest%%/*}
	path=/${rest#*/}
	[[ $rest == */* ]] || path=/
	exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" >&3
	local status
	IFS= read -r status <&3 || return 1
	[[ $status == "HTTP/1."?" 2"* ]] || {
		exec 3<&-
		return 1
	}
	sed '1,/^\r\{0,1\}$/d' <&3
	exec 3<&-
}

# wait_for_line NAME PID FILE REGEX SECONDS waits until FILE has a line
# matching REGEX; fails early, with the log, if the process exits.
wait_for_line() {
	local name=$1 pid=$2 file=$3 re=$4 secs=$5 i
	for ((i = 0; i < secs * 10; i++)); do
		if grep -Eq -- "$re" "$file" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$file" >&2 || true
			die "$name exited before it was ready (log: $file)"
		fi
		sleep 0.1
	done
	tail -n 20 "$file" >&2 || true
	die "$name not ready after ${secs}s: expected a line matching /$re/ in $file"
}

[[ -f $LOADGEN_CONFIG ]] || die "workload: expected a loadgen config at $LOADGEN_CONFIG, found none"
[[ $SERVERS =~ ^[1-9][0-9]*$ ]] || die "SERVERS: expected a positive number, found '$SERVERS'"
mkdir -p "$LOGS"

say "building epp, simulator, gateway, loadgen into $BIN/"
"$GO" build -o "$BIN/" ./cmd/epp ./cmd/simulator ./cmd/gateway ./cmd/loadgen

say "starting $SERVERS simulated servers ($MODEL_PROFILE on $GPU)"
"$BIN/simulator" --servers "$SERVERS" --base-port 0 --gpu "$GPU" --model-profile "$MODEL_PROFILE" \
	${SIMULATOR_EXTRA[@]+"${SIMULATOR_EXTRA[@]}"} >"$LOGS/simulator.log" 2>&1 &
PIDS+=($!)
wait_for_line simulator "$!" "$LOGS/simulator.log" 'servers? up' 30
ENDPOINTS=()
while IFS= read -r ep; do
	ENDPOINTS+=("$ep")
done < <(grep -Eo 'listening on http://[0-9.]+:[0-9]+' "$LOGS/simulator.log" | sed 's#.*http://##')
((${#ENDPOINTS[@]} == SERVERS)) || die "simulator: expected $SERVERS 'listening on' lines in $LOGS/simulator.log, found ${#ENDPOINTS[@]}"
ENDPOINT_LIST=$(
	IFS=,
	echo "${ENDPOINTS[*]}"
)
say "fleet: $ENDPOINT_LIST"

EPP_METRICS=
if [[ $DIRECT == 1 ]]; then
	UPSTREAM=(--direct "$ENDPOINT_LIST" --balance "${BALANCE:-round-robin}")
else
	secure=false
	[[ $EPP_TLS == 1 ]] && secure=true
	say "starting epp (ext_proc TLS: $secure)"
	"$BIN/epp" --endpoints "$ENDPOINT_LIST" --secure-serving="$secure" --bind-address 127.0.0.1 \
		--grpc-port 0 --grpc-health-port 0 --metrics-port 0 \
		${EPP_EXTRA[@]+"${EPP_EXTRA[@]}"} >"$LOGS/epp.log" 2>&1 &
	PIDS+=($!)
	wait_for_line epp "$!" "$LOGS/epp.log" '"msg":"epp serving"' 30
	serving=$(grep -m1 '"msg":"epp serving"' "$LOGS/epp.log")
	EPP_GRPC=$(sed -E 's/.*"grpc":"([^"]+)".*/\1/' <<<"$serving")
	EPP_METRICS=$(sed -E 's/.*"metrics":"([^"]+)".*/\1/' <<<"$serving")
	[[ $EPP_GRPC =~ ^[0-9.]+:[0-9]+$ ]] || die "epp: expected the ext_proc address in its 'epp serving' line, found '$EPP_GRPC'"
	# Ready when every endpoint has been scraped and is in scoring.
	ready=
	for _ in $(seq 100); do
		page=$(http_get "http://$EPP_METRICS/metrics" 2>/dev/null || true)
		if grep -Eq "^inference_pool_ready_pods(\{[^}]*\})? $SERVERS\$" <<<"$page"; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[[ -n $ready ]] || die "epp: expected inference_pool_ready_pods $SERVERS on http://$EPP_METRICS/metrics within 10s (log: $LOGS/epp.log)"
	say "epp ready: ext_proc $EPP_GRPC, metrics http://$EPP_METRICS/metrics"
	UPSTREAM=(--epp "$EPP_GRPC")
	[[ $EPP_TLS == 1 ]] && UPSTREAM+=(--epp-tls)
fi

say "starting the gateway"
"$BIN/gateway" --listen 127.0.0.1:0 "${UPSTREAM[@]}" ${GATEWAY_EXTRA[@]+"${GATEWAY_EXTRA[@]}"} >"$LOGS/gateway.log" 2>&1 &
PIDS+=($!)
wait_for_line gateway "$!" "$LOGS/gateway.log" '^gateway listening on http://' 15
GATEWAY_URL=$(grep -m1 -Eo 'http://[0-9.]+:[0-9]+' "$LOGS/gateway.log")
http_get "$GATEWAY_URL/v1/models" >/dev/null || die "gateway: expected GET $GATEWAY_URL/v1/models to answer 2xx through the stack, found an error (logs in $LOGS)"
say "gateway ready: $(sed -E 's/^gateway listening on //' <(head -n1 "$LOGS/gateway.log"))"

CONFIG="$OUT_DIR/loadgen.yaml"
sed -E "s#base_url: *\"?[^\",}]*\"?#base_url: \"$GATEWAY_URL\"#" "$LOADGEN_CONFIG" >"$CONFIG"
grep -q "base_url: \"$GATEWAY_URL\"" "$CONFIG" || die "workload: expected a server.base_url in $LOADGEN_CONFIG to point at the gateway, found none"
say "running loadgen ($LOADGEN_CONFIG) through the gateway"
# In the background and waited for, so a signal to this script runs the
# cleanup trap at once instead of after loadgen ends.
status=0
"$BIN/loadgen" run -c "$CONFIG" --output "$OUT_DIR" ${LOADGEN_EXTRA[@]+"${LOADGEN_EXTRA[@]}"} &
PIDS+=($!)
wait "$!" || status=$?
((status == 0)) || printf 'run-local: loadgen exited with status %d\n' "$status" >&2

# Where the requests went, from each server's own counters.
say "per endpoint (simulator counters):"
for ep in "${ENDPOINTS[@]}"; do
	page=$(http_get "http://$ep/metrics" 2>/dev/null || true)
	awk -v ep="$ep" '
		/^vllm:request_success_total/ { done += $NF }
		/^vllm:prefix_cache_queries_total/ { q += $NF }
		/^vllm:prefix_cache_hits_total/ { h += $NF }
		END { printf "    %-22s requests %5d   prefix-cache hit rate %s\n", ep, done, (q > 0 ? sprintf("%5.1f%%", 100 * h / q) : "  n/a") }
	' <<<"$page"
done

echo
say "results:"
echo "    summary:  $OUT_DIR/summary.json"
echo "    report:   $OUT_DIR/report.html"
echo "    requests: $OUT_DIR/requests.csv"
echo "    logs:     $LOGS/{simulator,epp,gateway}.log"
exit "$status"
