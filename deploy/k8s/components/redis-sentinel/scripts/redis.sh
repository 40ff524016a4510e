#!/bin/sh
# The redis container: redis-server with AOF, as the primary when the sentinels name this pod (or, on a fresh start,
# when it is the first pod), else as a replica of the primary they name.
set -eu
. "$(dirname "$0")/lib.sh"
set -- $(current_primary)
primary_host="$1"
primary_port="$2"
set -- --port "$REDIS_PORT" --dir /data \
  --appendonly yes --appendfsync everysec \
  --maxmemory 1536mb --maxmemory-policy noeviction \
  --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
  --replica-announce-ip "$SELF" \
  --min-replicas-to-write 1 --min-replicas-max-lag 10
if [ "$primary_host $primary_port" != "$SELF $REDIS_PORT" ]; then
  set -- "$@" --replicaof "$primary_host" "$primary_port"
fi
exec redis-server "$@"
