#!/bin/sh
# A slot of the demo service on the fleet's app host: bgd's demo app on
# 0.0.0.0:<port>, so that the LB hosts reach it over the network.
# Arguments: port colour release. A release named slow-* answers /health
# only 5 s after it starts, so a deploy of it holds the lock long enough to
# be killed.
set -eu
case $3 in
slow-*) exec bgd demo-app --host 0.0.0.0 --port "$1" --color "$2" --release "$3" --ready-after 5s ;;
*) exec bgd demo-app --host 0.0.0.0 --port "$1" --color "$2" --release "$3" ;;
esac
