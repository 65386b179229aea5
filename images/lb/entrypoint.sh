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

case $BGD_LB in
nginx)
	# Debian's nginx.conf includes conf.d/*.conf, where bgd owns bgd-app.conf.
	nginx
	;;
haproxy)
	mkdir -p /run/haproxy
	# HAProxy will not start without the map; after a restart it holds the
	# colour bgd last set.
	[ -s /etc/haproxy/bgd.map ] || echo "app app_blue" >/etc/haproxy/bgd.map
	bgd render >/etc/haproxy/bgd.cfg
	haproxy -W -D -p /run/haproxy.pid -f /etc/haproxy/haproxy.cfg -f /etc/haproxy/bgd.cfg
	;;
builtin)
	# bgd starts its proxy itself (detached) when none answers on 0.0.0.0:5004.
	;;
*)
	echo "bgd-entrypoint: unknown BGD_LB=$BGD_LB (nginx, haproxy or builtin)" >&2
	exit 2
	;;
esac

# Converge to the recorded state: a fresh state starts blue; otherwise the
# recorded active colour comes back and the load balancer routes to it.
converge() {
	active=$(bgd status --json | sed -n 's/^  "active_version": "\([a-z]*\)",$/\1/p')
	bgd start "${active:-blue}"
}
# A failure is logged and the host stays up, so `docker-compose exec` can look.
converge || echo "bgd-entrypoint: bringing the service up failed (see above); the container stays up" >&2
echo "bgd-entrypoint: ready"
exec sleep infinity
