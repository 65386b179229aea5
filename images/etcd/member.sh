#!/bin/sh
# One member of the fleet's etcd cluster, named by the container's hostname
# (etcd1, etcd2, ...), the name its peers and clients reach it by. The
# cluster is static: every member is started with the same
# ETCD_INITIAL_CLUSTER ("etcd1=http://etcd1:2380,..."), which etcd reads from
# the environment, as it does ETCD_INITIAL_CLUSTER_TOKEN,
# ETCD_HEARTBEAT_INTERVAL and ETCD_ELECTION_TIMEOUT. Without it the member is
# a cluster of its own.
#
# The data directory is in the container: a member stopped and started again
# (docker-compose stop/start) keeps its data and rejoins its cluster; etcd
# then ignores the initial-cluster settings.
set -eu
name=$(hostname)
: "${ETCD_INITIAL_CLUSTER:=$name=http://$name:2380}"
export ETCD_INITIAL_CLUSTER
exec etcd --name "$name" --data-dir /var/lib/etcd/fleet \
	--listen-client-urls http://0.0.0.0:2379 \
	--advertise-client-urls "http://$name:2379" \
	--listen-peer-urls http://0.0.0.0:2380 \
	--initial-advertise-peer-urls "http://$name:2380" \
	--initial-cluster-state new \
	--logger zap --log-level warn
