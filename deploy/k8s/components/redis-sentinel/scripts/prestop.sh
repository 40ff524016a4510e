#!/bin/sh
# preStop of the redis container. When this server is the primary, hand over to a replica before it stops, losing no
# write: pause writes (clients wait), have a sentinel promote a replica (all of them have every write by then), follow
# the new primary, and let the paused writes go: they now fail READONLY and the clients retry on the new primary.
# Without it a stopping primary costs a down-after-milliseconds outage, and writes that reach it after a forced
# failover are lost when it resyncs.
. "$(dirname "$0")/lib.sh"
role="$(redis-cli -p "$REDIS_PORT" --raw ROLE 2>/dev/null | head -n 1)"
[ "$role" = master ] || exit 0
redis-cli -p "$REDIS_PORT" CLIENT PAUSE 20000 WRITE >/dev/null
# Hand over only once a replica has every write (a replica that has just synced may not have been streamed any):
# with writes paused the primary's offset stands still; wait up to 10 s for a replica to reach it.
tries=0
while [ "$tries" -lt 100 ]; do
  redis-cli -p "$REDIS_PORT" INFO replication | tr -d '\r' | awk -F '[:,=]' '
    /^master_repl_offset:/ { primary = $2 }
    /^slave[0-9]+:/ { for (i = 2; i < NF; i += 2) if ($i == "offset" && $(i + 1) > best) best = $(i + 1) }
    END { exit !(primary > 0 && best >= primary) }' && break
  sleep 0.1
  tries=$((tries + 1))
done
for sentinel in $SENTINELS; do
  answer="$(redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw SENTINEL FAILOVER "$MASTER_NAME" 2>/dev/null)"
  [ "$answer" = OK ] && break
done
tries=0
while [ "$tries" -lt 40 ]; do
  primary="$(sentinel_primary)"
  if [ -n "$primary" ] && [ "$primary" != "$SELF $REDIS_PORT" ]; then
    # shellcheck disable=SC2086  # two words: host and port
    redis-cli -p "$REDIS_PORT" REPLICAOF $primary >/dev/null
    break
  fi
  sleep 0.5
  tries=$((tries + 1))
done
redis-cli -p "$REDIS_PORT" CLIENT UNPAUSE >/dev/null
