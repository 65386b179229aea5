#!/bin/sh
# The entrypoint of the hosts of docker-compose.fleet.yml, by FLEET_ROLE:
#
#   app: bring the demo service's slots to the state recorded in etcd (`bgd
#        up`: a fresh state starts blue), then stay, for the operator's
#        commands (docker-compose exec app bgd deploy ...).
#   lb:  start the host's load balancer (BGD_LB, set by the lb images:
#        nginx, haproxy or builtin), then run `bgd agent --host FLEET_HOST`
#        in the foreground: it applies the routing recorded in etcd to the
#        load balancer and reports under the host's name. SIGTERM (docker
#        stop) reaches it through docker's init and it leaves cleanly.
#
# BG_CONFIG names the host's bluegreen.yml (images/fleet/*.yml, mounted at
# /etc/bgd/fleet).
set -eu
: "${FLEET_ROLE:?FLEET_ROLE names the host: app or lb}"

case $FLEET_ROLE in
app)
	# The LB hosts' agents start after this host, so up does not wait for
	# them. A failure is logged and the host stays up, so `docker-compose
	# exec` can look.
	bgd --wait-agents=false up || echo "fleet-entrypoint: bringing the service up failed (see above); the container stays up" >&2
	echo "fleet-entrypoint: app ready"
	exec sleep infinity
	;;
lb) ;;
*)
	echo "fleet-entrypoint: unknown FLEET_ROLE=$FLEET_ROLE (app or lb)" >&2
	exit 2
	;;
esac

: "${FLEET_HOST:?FLEET_HOST names the LB host to its agent (lb1, lb2, ...)}"
: "${BGD_LB:?BGD_LB names the load balancer: nginx, haproxy or builtin}"
case $BGD_LB in
nginx)
	# Debian's nginx.conf includes conf.d/*.conf, where the agent writes
	# bgd-app.conf and reloads nginx.
	nginx
	;;
haproxy)
	mkdir -p /run/haproxy
	# HAProxy will not start without the map; the agent sets the recorded
	# colour in it through the admin socket.
	[ -s /etc/haproxy/bgd.map ] || echo "app app_blue" >/etc/haproxy/bgd.map
	# This host's HAProxy snippet for the routing recorded in etcd.
	bgd render >/etc/haproxy/bgd.cfg
	haproxy -W -D -p /run/haproxy.pid -f /etc/bgd/haproxy.cfg -f /etc/haproxy/bgd.cfg
	;;
builtin)
	# The agent starts bgd's proxy on 0.0.0.0:5004 when none answers there.
	;;
*)
	echo "fleet-entrypoint: unknown BGD_LB=$BGD_LB (nginx, haproxy or builtin)" >&2
	exit 2
	;;
esac
echo "fleet-entrypoint: $BGD_LB started; running the agent of $FLEET_HOST"
exec bgd agent --host "$FLEET_HOST"
