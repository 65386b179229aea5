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
# The host's load balancer, as the LB hosts of docker-compose.yml start
# theirs (images/lb/entrypoint.sh); with the etcd backend `bgd render`
# gives HAProxy this host's snippet for the routing recorded in etcd, and
# with builtin the agent starts bgd's proxy when none answers.
/usr/local/bin/bgd-entrypoint start-lb
echo "fleet-entrypoint: $BGD_LB started; running the agent of $FLEET_HOST"
exec bgd agent --host "$FLEET_HOST"
