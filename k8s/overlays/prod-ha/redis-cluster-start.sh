#!/bin/sh
# Starts one node of the Redis Cluster (redis-cluster.yaml): points its
# cluster configuration at the addresses its peers have now, then runs the
# command it was given (the container's args: redis-server and its options).
#
# Why: a pod gets a new IP address whenever it is created again, but the
# cluster configuration (--cluster-config-file, on the PersistentVolume)
# keeps the addresses the node last saw. A single node coming back finds the
# others where they were, and they learn its new address from it; after all
# of them moved at once (a full restart, every node drained) nobody knows
# where anybody is and the cluster stays down. Every node announces its
# stable DNS name (--cluster-announce-hostname), which the configuration
# keeps next to each address (`ip:port@bus,hostname[,...]`), so each address
# is replaced here by what that name resolves to now, and this node's own by
# POD_IP. A name that does not resolve keeps its old address.
#
# Usage: redis-cluster-start.sh redis-server --cluster-config-file FILE ...
set -eu

config=""
previous=""
for argument in "$@"; do
    if [ "$previous" = "--cluster-config-file" ]; then
        config="$argument"
    fi
    previous="$argument"
done

# What the image's entrypoint would set: files readable by their owner only.
umask 0077

if [ -n "$config" ] && [ -s "$config" ]; then
    # The peers' names (only DNS-name characters, as they go to getent).
    names=$(awk '$1 != "vars" && $3 !~ /(^|,)myself(,|$)/ {
        n = split(substr($2, index($2, "@") + 1), extra, ",")
        if (n >= 2 && extra[2] ~ /^[A-Za-z0-9.-]+$/) print extra[2]
    }' "$config")
    # The pods start together (podManagementPolicy: Parallel): give the
    # others' names up to 30 s to appear in DNS (the Service publishes pods
    # that are not ready yet).
    tries=0
    while [ "$tries" -lt 15 ]; do
        missing=0
        for name in $names; do
            getent hosts "$name" >/dev/null 2>&1 || missing=1
        done
        [ "$missing" -eq 0 ] && break
        tries=$((tries + 1))
        sleep 2
    done
    awk -v me="${POD_IP:-}" '
        $1 == "vars" || NF < 8 || index($2, "@") == 0 { print; next }
        {
            at = index($2, "@")
            n = split(substr($2, at + 1), extra, ",")
            ip = ""
            if ($3 ~ /(^|,)myself(,|$)/) {
                ip = me
            } else if (n >= 2 && extra[2] ~ /^[A-Za-z0-9.-]+$/) {
                line = ""
                command = "getent hosts " extra[2]
                if ((command | getline line) <= 0) line = ""
                close(command)
                split(line, resolved, " ")
                ip = resolved[1]
            }
            if (ip != "") {
                port = substr($2, 1, at - 1)
                sub(/.*:/, "", port)
                $2 = ip ":" port substr($2, at)
            }
            print
        }' "$config" > "$config.new"
    if [ "$(cat "$config.new")" != "$(cat "$config")" ]; then
        echo "redis-cluster-start: peer addresses refreshed in $config from their names"
    fi
    mv "$config.new" "$config"
fi

exec "$@"
