#!/bin/sh
# Forms the Redis Cluster of the StatefulSet redis-cluster (redis-cluster.yaml)
# once: three primaries with one replica each over its six pods. Run by the
# Job redis-cluster-create; safe to run again: when the nodes already form a
# cluster it changes nothing and exits 0.
#
#   1. any node that answers reports a whole cluster (cluster_state:ok, or
#      all 16384 slots assigned while a node is down): done, exit 0;
#   2. wait for every pod to answer PING; each must still be empty (knows
#      only itself, holds no slot): otherwise some but not all of them were
#      joined before (an interrupted run), which needs a person
#      (redis-cli --cluster check / fix, k8s/README.md): exit 1;
#   3. redis-cli --cluster create over their addresses (it and CLUSTER MEET
#      take IP addresses, not names), --cluster-replicas 1, then wait until
#      the cluster reports cluster_state:ok.
#
# Settings: REDIS_SERVICE (redis-cluster), REDIS_NODES (6), REDIS_PORT (6379).
set -eu

service="${REDIS_SERVICE:-redis-cluster}"
nodes="${REDIS_NODES:-6}"
port="${REDIS_PORT:-6379}"

# The address of pod N, through the headless Service (empty if unknown).
address_of() {
    getent hosts "$service-$1.$service" | awk '{ print $1; exit }'
}

# A field of a node's CLUSTER INFO (empty if the node does not answer).
info_field() {
    redis-cli -h "$1" -p "$port" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# 1. An existing cluster, as seen by any node that answers now.
i=0
while [ "$i" -lt "$nodes" ]; do
    ip="$(address_of "$i" || true)"
    if [ -n "$ip" ]; then
        state="$(info_field "$ip" cluster_state)"
        slots="$(info_field "$ip" cluster_slots_assigned)"
        if [ "$state" = "ok" ] || [ "$slots" = "16384" ]; then
            echo "$service-$i: cluster_state:$state, cluster_slots_assigned:$slots: the cluster exists, nothing to do"
            exit 0
        fi
    fi
    i=$((i + 1))
done

# 2. Every node up and empty.
addresses=""
first=""
i=0
while [ "$i" -lt "$nodes" ]; do
    while :; do
        ip="$(address_of "$i" || true)"
        if [ -n "$ip" ] && [ "$(redis-cli -h "$ip" -p "$port" ping 2>/dev/null)" = "PONG" ]; then
            break
        fi
        echo "waiting for $service-$i.$service to answer"
        sleep 2
    done
    known="$(info_field "$ip" cluster_known_nodes)"
    slots="$(info_field "$ip" cluster_slots_assigned)"
    if [ "$known" != "1" ] || [ "$slots" != "0" ]; then
        echo "$service-$i ($ip) knows $known nodes and $slots slots, yet no node reports a whole cluster:" >&2
        echo "a cluster formed in part; repair it by hand (redis-cli --cluster check / fix), see k8s/README.md" >&2
        exit 1
    fi
    addresses="$addresses $ip:$port"
    [ -n "$first" ] || first="$ip"
    i=$((i + 1))
done

# 3. Create, and wait until every slot is served.
echo "creating the cluster over$addresses"
# One argument per address (word splitting wanted).
# shellcheck disable=SC2086
redis-cli --cluster create $addresses --cluster-replicas 1 --cluster-yes
tries=0
until [ "$(info_field "$first" cluster_state)" = "ok" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then
        echo "cluster_state is still not ok two minutes after the cluster was created" >&2
        exit 1
    fi
    sleep 2
done
redis-cli --cluster check "$first:$port"
echo "the cluster is formed: cluster_state:ok"
