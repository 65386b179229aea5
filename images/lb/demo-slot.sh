#!/bin/sh
# A slot of the demo service on the compose LB hosts: bgd's demo app on
# 127.0.0.1:<port>, next to the load balancer. Arguments: port colour release.
# A release named slow-* answers /health only 5 s after it starts, so a
# deploy of it lasts long enough to be interrupted (the fault tests do).
set -eu
case $3 in
slow-*) exec bgd demo-app --port "$1" --color "$2" --release "$3" --ready-after 5s ;;
*) exec bgd demo-app --port "$1" --color "$2" --release "$3" ;;
esac
