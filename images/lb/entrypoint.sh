#!/bin/sh
# The entrypoint of the LB hosts in docker-compose.yml (lb-nginx, lb-haproxy,
# lb-builtin): start the host's load balancer, let bgd bring the demo service
# "app" to its recorded state, then stay. PID 1 is docker's init (init: true),
# which reaps the slots and the builtin proxy that bgd detaches.
#
# The state (/var/lib/bgd), nginx's bgd file and HAProxy's map survive a
# container restart, so the load balancer starts on the recorded colour and
# bgd starts the recorded slots again.
set -eu
: "${BGD_LB:?BGD_LB names the load balancer: nginx, haproxy or builtin}"

# start_lb starts the load balancer from its files.
start_lb() {
	case $BGD_LB in
	nginx)
		# Debian's nginx.conf includes conf.d/*.conf, where bgd owns bgd-app.conf.
		nginx
		;;
	haproxy)
		mkdir -p /run/haproxy
		# HAProxy will not start without the map; after a restart it holds
		# the colour bgd last set.
		[ -s /etc/haproxy/bgd.map ] || echo "app app_blue" >/etc/haproxy/bgd.map
		bgd render >/etc/haproxy/bgd.cfg
		haproxy -W -D -p /run/haproxy.pid -f /etc/bgd/haproxy.cfg -f /etc/haproxy/bgd.cfg
		;;
	builtin)
		# bgd starts its proxy itself (detached) when none answers on
		# 0.0.0.0:5004, and `bgd health-check` restarts it if it dies.
		;;
	*)
		echo "bgd-entrypoint: unknown BGD_LB=$BGD_LB (nginx, haproxy or builtin)" >&2
		exit 2
		;;
	esac
}

# stop_lb stops nginx or HAProxy and waits until its master is gone (10 s at most).
stop_lb() {
	case $BGD_LB in
	nginx) pidfile=/run/nginx.pid ;;
	haproxy) pidfile=/run/haproxy.pid ;;
	*)
		echo "bgd-entrypoint: restart-lb is for nginx and haproxy; the builtin proxy is bgd's (bgd health-check restarts it)" >&2
		exit 2
		;;
	esac
	pid=$(cat "$pidfile")
	kill "$pid"
	i=0
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 200 ] || { echo "bgd-entrypoint: $BGD_LB (pid $pid) did not stop within 10 s" >&2; exit 1; }
		sleep 0.05
	done
	rm -f "$pidfile"
}

# `bgd-entrypoint restart-lb` (through docker-compose exec): stop the load
# balancer and start it again from its files; bgd is not involved.
# `bgd-entrypoint start-lb`: start it and return (the fleet's LB hosts, whose
# own entrypoint then runs `bgd agent`).
case ${1:-} in
"") ;;
start-lb)
	start_lb
	exit 0
	;;
restart-lb)
	stop_lb
	start_lb
	echo "bgd-entrypoint: $BGD_LB restarted"
	exit 0
	;;
*)
	echo "bgd-entrypoint: unknown argument \"$1\" (none starts the host; start-lb starts its load balancer only; restart-lb restarts it)" >&2
	exit 2
	;;
esac

start_lb

# Converge to the recorded state (bgd up): a fresh state starts blue;
# otherwise the recorded active colour comes back on its release, the
# standby too if it was running, and the load balancer routes to the active
# colour.
converge() { bgd up; }
# A failure is logged and the host stays up, so `docker-compose exec` can look.
converge || echo "bgd-entrypoint: bringing the service up failed (see above); the container stays up" >&2
echo "bgd-entrypoint: ready"
exec sleep infinity
