#!/usr/bin/env bash
# CI's check of `make demo` against what the runbook or an earlier demo
# leaves behind, from a clean clone's state, on the demo's own ports:
#   1. KEEP=1 make demo, then make demo on its leftovers;
#   2. make demo after the seed runbook left green active;
#   3. make demo with a foreign process on blue's port: refused, nothing started;
#   4. make demo with a corrupt state file: refused, naming `bgd reconcile`;
# and after each, only what was there before the demo still runs.
# Needs free ports and no state file yet; builds bin/bgd (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
bgd=$PWD/bin/bgd
proxy_port=${BG_PROXY_PORT:-5004}
blue_port=${BLUE_PORT:-5005}
green_port=${GREEN_PORT:-5006}
state=${BG_STATE_FILE:-.local_context/bg_state.json}
log=$(mktemp)
foreign=
fresh_dir=
trap 'rm -f "$log"; [ -n "$foreign" ] && kill "$foreign" 2>/dev/null; true' EXIT

fail() {
	echo "demo-check: FAIL: $*" >&2
	echo "--- output of the last demo:" >&2
	cat "$log" >&2
	exit 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# expect_ports "proxy blue" says which of the demo's ports must be in use;
# the others must be free (a just-killed proxy may take a moment).
expect_ports() {
	local name port want i
	for name in proxy blue green; do
		case $name in proxy) port=$proxy_port ;; blue) port=$blue_port ;; green) port=$green_port ;; esac
		want=free
		case " $1 " in *" $name "*) want=used ;; esac
		for i in $(seq 100); do
			if listening "$port"; then [ $want = used ] && break; else [ $want = free ] && break; fi
			sleep 0.05
		done
		if listening "$port"; then
			[ $want = used ] || fail "$2: port $port ($name) is still in use"
		else
			[ $want = free ] || fail "$2: port $port ($name) is free, want it running"
		fi
	done
}
demo() { make -s demo >"$log" 2>&1; }
# stop_all stops what the runbook steps of this check started.
stop_all() {
	"$bgd" stop --force blue >/dev/null
	"$bgd" stop --force green >/dev/null
	local pid
	pid=$("$bgd" --json status | sed -n '/^  "proxy": {/,/^  }/s/^    "pid": \([0-9]*\).*/\1/p')
	[ -n "$pid" ] && [ "$pid" != 0 ] && kill "$pid" 2>/dev/null
	expect_ports "" "stop_all"
}

make -s build
[ -z "${BG_STATE_FILE:-}" ] && [ ! -e .local_context ] && fresh_dir=1
[ -e "$state" ] && { echo "demo-check: $state exists: this check starts from a clean clone's state" >&2; exit 1; }
expect_ports "" "before the check (the demo's ports must be free)"

echo "demo-check 1: KEEP=1 make demo, then make demo on its leftovers"
KEEP=1 demo || fail "KEEP=1 make demo from a clean state"
grep -q "demo app: color=green release=v2" "$log" || fail "the first demo did not reach green"
expect_ports "proxy blue green" "after KEEP=1 make demo"
demo || fail "make demo on the leftovers of KEEP=1 make demo"
grep -q "deployed v2 to green and rolled back to blue" "$log" || fail "the second demo's deploy and rollback"
grep -q "left running, as before the demo: blue (pid [0-9]*) and the builtin proxy" "$log" || fail "the second demo's clean-up report"
expect_ports "proxy blue" "after the second demo (it stops only what it started)"
stop_all

echo "demo-check 2: make demo after the runbook left green active"
"$bgd" start blue >/dev/null
"$bgd" deploy >/dev/null
demo || fail "make demo with green active"
grep -q "bgd start green" "$log" || fail "the demo did not start the active colour, green"
grep -q "demo app: color=blue release=v2" "$log" || fail "blue, just deployed, did not answer"
grep -q "deployed v2 to blue and rolled back to green" "$log" || fail "the deploy to blue and rollback to green"
expect_ports "proxy green" "after the demo on the runbook's leftovers"
stop_all

echo "demo-check 3: a foreign process on blue's port"
# Any program that listens will do: a bgd proxy of another state file, here.
other=$(mktemp -d)
BG_PROXY_PORT=$blue_port BLUE_PORT=$((blue_port + 10000)) "$bgd" --state-file "$other/bg_state.json" proxy >/dev/null 2>&1 &
foreign=$!
for _ in $(seq 100); do listening "$blue_port" && break; sleep 0.05; done
if demo; then fail "make demo succeeded with port $blue_port held by pid $foreign"; fi
grep -q "port $blue_port (blue's) is taken by pid $foreign" "$log" || fail "the demo did not name the foreign process"
grep -q "BLUE_PORT=" "$log" || fail "the demo did not say how to move to other ports"
expect_ports "blue" "after the refused demo (it must start nothing)"
kill "$foreign"
wait "$foreign" 2>/dev/null || true
foreign=
rm -rf "$other"
expect_ports "" "after the foreign process"

echo "demo-check 4: a corrupt state file"
printf '{"active_version": "gr' >"$state"
if demo; then fail "make demo succeeded on a corrupt state file"; fi
grep -q "bgd reconcile" "$log" || fail "the demo did not say to run bgd reconcile"
expect_ports "" "after the refused demo on a corrupt state"
"$bgd" reconcile >/dev/null
demo || fail "make demo after bgd reconcile"
expect_ports "" "after the demo that follows reconcile"

# Leave the clone as clean as it was (everything the demos started is stopped).
[ -n "${fresh_dir:-}" ] && rm -rf .local_context
echo "demo-check: ok (make demo twice in a row, on the runbook's leftovers, and refusing what it cannot fix)"
