#!/bin/sh
# The sentinel container: a sentinel watching the primary the other sentinels name (or, on a fresh start, the first
# pod), quorum 2 of 3. Its config file is rewritten by the sentinel itself, so it lives on an emptyDir volume.
set -eu
. "$(dirname "$0")/lib.sh"
set -- $(current_primary)
config=/sentinel/sentinel.conf
cat >"$config" <<CONF
port $SENTINEL_PORT
dir /sentinel
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
requirepass $REDIS_PASSWORD
sentinel sentinel-pass $REDIS_PASSWORD
sentinel monitor $MASTER_NAME $1 $2 2
sentinel auth-pass $MASTER_NAME $REDIS_PASSWORD
sentinel down-after-milliseconds $MASTER_NAME 5000
sentinel failover-timeout $MASTER_NAME 60000
sentinel parallel-syncs $MASTER_NAME 1
CONF
exec redis-sentinel "$config"
