#!/usr/bin/env bash
# The main job: a full blue-green deploy through the builtin proxy, with no
# config file and nothing installed but Go. Uses the seed's ports (proxy 5004,
# slots 5005/5006) unless BG_PROXY_PORT, BLUE_PORT, GREEN_PORT say otherwise.
# State goes to ./.local_context (BG_STATE_FILE overrides).
#
# It works from whatever the runbook or an earlier demo left behind: it
# starts the active colour (blue on a fresh machine), deploys to the other
# one and checks that the new colour answers through the proxy, rolls back
# and checks that the old one answers again. What it cannot fix itself (a
# corrupt state file, a foreign process on one of its ports) it stops on
# before starting anything, saying what to do.
#
# At the end it stops what it started, and only that: a slot or proxy that
# was running before the demo keeps running (a slot the deploy replaced is
# not brought back). KEEP=1 leaves everything running.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bgd=${BGD:-$here/bin/bgd}
proxy_port=${BG_PROXY_PORT:-5004}

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "bgd $*"; "$bgd" "$@"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# GET / through the proxy with bash's /dev/tcp, so no curl is needed.
request() {
	step "GET http://127.0.0.1:$proxy_port/"
	exec 3<>"/dev/tcp/127.0.0.1/$proxy_port"
	printf 'GET / HTTP/1.0\r\nHost: demo\r\n\r\n' >&3
	local body
	body=$(cat <&3)
	exec 3<&-
	printf '%s\n' "$body" | tail -n 1
}

# field JSON OBJECT KEY prints a field of `bgd --json status`: a top-level
# one (OBJECT "") or one of the object OBJECT (blue, green, proxy). bgd
# indents its JSON by two spaces, so the depth is the indentation.
field() {
	awk -v obj="$2" -v key="$3" '
		/^  "[a-z_]+": \{$/ { cur = substr($1, 2, length($1) - 3); next }
		/^  \}/ { cur = ""; next }
		cur == obj {
			prefix = (obj == "" ? "  " : "    ") "\"" key "\": "
			if (index($0, prefix) != 1) next
			v = substr($0, length(prefix) + 1)
			sub(/,$/, "", v)
			gsub(/^"|"$/, "", v)
			gsub(/\\u0026/, "\\&", v)
			gsub(/\\u003c/, "<", v)
			gsub(/\\u003e/, ">", v)
			gsub(/\\"/, "\"", v)
			print v
			exit
		}' <<<"$1"
}

# listening PORT: does anything accept connections on 127.0.0.1:PORT?
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_of "pid N (command)" prints N.
pid_of() {
	local p=${1#pid }
	printf '%s' "${p%% *}"
}

# holder PORT names the process listening on PORT (from /proc, so no ss is
# needed), or prints nothing when it cannot tell.
holder() {
	local hex inode fd pid
	hex=$(printf '%04X' "$1")
	inode=$(awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10; exit }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)
	[ -n "$inode" ] || return 0
	fd=$(find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null | head -n 1 || true)
	[ -n "$fd" ] || return 0
	pid=${fd#/proc/}
	pid=${pid%%/*}
	printf 'pid %s (%s)' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c 1-80 | sed 's/ *$//')"
}

# What runs before the demo: the cleanup leaves it running.
errfile=$(mktemp)
if ! before=$("$bgd" --json status 2>"$errfile"); then
	why=$(cat "$errfile")
	rm -f "$errfile"
	printf '%s\n' "$why" >&2
	case $why in *reconcile*)
		die "bgd cannot use its state file (see above). Run \`$bgd reconcile\`: it keeps the bad file beside it and rebuilds the state from what really runs. Then run \`make demo\` again." ;;
	esac
	die "\`bgd status\` failed (see above): fix that, then run \`make demo\` again."
fi
rm -f "$errfile"
active=$(field "$before" "" active_version)
state_file=$(field "$before" "" state_file)
case $active in blue) idle=green ;; green) idle=blue ;; *) die "bgd status names no active colour (\"$active\")" ;; esac
declare -A pid_before port
for c in blue green; do
	pid_before[$c]=$(field "$before" "$c" pid)
	port[$c]=$(field "$before" "$c" port)
done
proxy_before=0
if [ "$(field "$before" proxy running)" = true ]; then
	proxy_before=$(field "$before" proxy pid)
fi

# Ports held by something that is not this service's: say what to do.
if [ "$proxy_before" = 0 ] && listening "$proxy_port"; then
	why=$(field "$before" proxy error)
	who=$(holder "$proxy_port")
	die "port $proxy_port (the builtin proxy's) is taken, not by this service's proxy: ${why:-held by ${who:-an unknown process}}.
Stop it${who:+ (kill $(pid_of "$who"))}, or run the demo on another port: BG_PROXY_PORT=15004 make demo"
fi
for c in blue green; do
	if [ "${pid_before[$c]}" = 0 ] && listening "${port[$c]}"; then
		who=$(holder "${port[$c]}")
		case $who in *" demo-app "*)
			die "port ${port[$c]} ($c's) is taken by $who, a bgd slot that the state file $state_file does not know.
Run \`$bgd reconcile\` (it adopts the slots that run) or stop it (kill $(pid_of "$who")), then run \`make demo\` again." ;;
		esac
		die "port ${port[$c]} ($c's) is taken${who:+ by $who}, not by a slot of the state file $state_file.
Stop it${who:+ (kill $(pid_of "$who"))}, or run the demo on other ports: BLUE_PORT=15005 GREEN_PORT=15006 make demo"
	fi
done
# A slot pid the state names must be a demo-app slot: a stale state (a pid
# reused by another process since) would have bgd stop that process.
for c in blue green; do
	pid=${pid_before[$c]}
	[ "$pid" = 0 ] && continue
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c 1-80 | sed 's/ *$//' || true)
	case $cmd in *" demo-app "*) continue ;; esac
	die "the state file $state_file names pid $pid as the $c slot, but that process is not one (${cmd:-unknown}): the state is stale (the pid was reused), and bgd would stop that process.
Move the stale state aside (mv $state_file $state_file.stale) and run \`make demo\` again."
done
if [ "$proxy_before" != 0 ] || [ "${pid_before[blue]}" != 0 ] || [ "${pid_before[green]}" != 0 ]; then
	echo "demo: running before the demo (the clean-up leaves them running, but not a slot the deploy replaces): proxy pid $proxy_before, blue pid ${pid_before[blue]}, green pid ${pid_before[green]}"
fi

# and_list A B C prints "A, B and C".
and_list() {
	local out="" i
	for ((i = 1; i <= $#; i++)); do
		if ((i == 1)); then out=${!i}; elif ((i == $#)); then out+=" and ${!i}"; else out+=", ${!i}"; fi
	done
	printf '%s' "$out"
}

cleanup() {
	if [ "${KEEP:-}" = 1 ]; then
		echo "KEEP=1: everything keeps running"
		return
	fi
	step "cleaning up what the demo started (KEEP=1 keeps everything running)"
	local after c pid stopped=() kept=()
	if ! after=$("$bgd" --json status); then
		echo "demo: cannot read the state to clean up: stop the slots (\`$bgd stop --force blue\`, \`$bgd stop --force green\`) and the proxy yourself" >&2
		return
	fi
	for c in blue green; do
		pid=$(field "$after" "$c" pid)
		if [ "$pid" != 0 ] && [ "$pid" != "${pid_before[$c]}" ]; then
			"$bgd" stop --force "$c" >/dev/null && stopped+=("$c")
		elif [ "$pid" != 0 ]; then
			kept+=("$c (pid $pid)")
		fi
	done
	# The pid the proxy itself reports: a bgd proxy of this state file.
	if [ "$(field "$after" proxy running)" = true ]; then
		pid=$(field "$after" proxy pid)
		if [ "$pid" != "$proxy_before" ]; then
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 100); do listening "$proxy_port" || break; sleep 0.05; done
			stopped+=("the builtin proxy")
		else
			kept+=("the builtin proxy (pid $pid)")
		fi
	fi
	if [ ${#stopped[@]} -gt 0 ]; then
		echo "stopped $(and_list "${stopped[@]}")"
	else
		echo "nothing of the demo's was left running"
	fi
	if [ ${#kept[@]} -gt 0 ]; then
		echo "left running, as before the demo: $(and_list "${kept[@]}")"
	fi
}
trap cleanup EXIT

run status
run start "$active"
answer=$(request)
echo "$answer"
case $answer in *"color=$active "*) ;; *) die "expected $active to answer through the proxy" ;; esac
# A release the active slot does not run already, so the deploy does deploy.
release=v2
[ "$(field "$before" "$active" release)" = v2 ] && release=v3
run deploy --release "$release"
run status
answer=$(request)
echo "$answer"
case $answer in *"color=$idle release=$release"*) ;; *) die "expected $idle (release $release, just deployed) to answer through the proxy" ;; esac
run rollback
run status
answer=$(request)
echo "$answer"
case $answer in *"color=$active "*) ;; *) die "expected $active to answer through the proxy after the rollback" ;; esac
echo "demo: deployed $release to $idle and rolled back to $active, each answering through the proxy on :$proxy_port"
