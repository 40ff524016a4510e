# Shared by the scripts of the Redis + Sentinel pods (sourced, not run). Names default to the StatefulSet's pods
# redis-0..2 behind the headless Service; every one can be overridden (the scripts also run on loopback in tests).
NS="${POD_NAMESPACE:-imagegen}"
DOMAIN="redis-headless.${NS}.svc.cluster.local"
SELF="${REDIS_SELF:-$(hostname).${DOMAIN}}"
REDIS_PORT="${REDIS_PORT:-6379}"
SENTINEL_PORT="${SENTINEL_PORT:-26379}"
SENTINELS="${REDIS_SENTINELS:-redis-0.${DOMAIN}:26379 redis-1.${DOMAIN}:26379 redis-2.${DOMAIN}:26379}"
FIRST_PRIMARY="${REDIS_FIRST_PRIMARY:-redis-0.${DOMAIN}}"
MASTER_NAME="${REDIS_MASTER_NAME:-mymaster}"

# "host port" of the primary as the first sentinel that answers names it; nothing when none answers.
sentinel_primary() {
  for sentinel in $SENTINELS; do
    # shellcheck disable=SC2046  # two words: host and port
    set -- $(redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw SENTINEL get-master-addr-by-name \
      "$MASTER_NAME" 2>/dev/null)
    if [ "$#" -eq 2 ] && [ "$2" -eq "$2" ] 2>/dev/null; then
      echo "$1 $2"
      return 0
    fi
  done
  return 0
}

# The primary now: what the sentinels say, else (a fresh start, no sentinel up yet) the first pod.
current_primary() {
  primary="$(sentinel_primary)"
  echo "${primary:-$FIRST_PRIMARY $REDIS_PORT}"
}
