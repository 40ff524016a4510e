"""Lua scripts behind every change of a job's status, so each change and its bookkeeping happen atomically:
the record, the event stream, the set of running jobs, the owner's active-job set and the webhook fan-out.
"""

from __future__ import annotations

# Shared by the scripts, which read every field they need of the record in one HMGET first (a command is a command,
# in a script or not: docs/performance.md counts them). emit(): append an event to the job's stream and, when the job
# subscribed a webhook to that event type (`hook_url`, `hook_events`: its record's fields), to the webhook delivery
# stream. settle(): a job left `running`/`queued` for good (`active`: its record's `active_key`).
_PRELUDE = """
local function emit(events_key, hooks_key, maxlen, job_id, event_type, data, hook_url, hook_events)
  local id = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'type', event_type, 'data', data)
  if hook_url and hook_events and string.find(',' .. hook_events .. ',', ',' .. event_type .. ',', 1, true) then
    redis.call('XADD', hooks_key, 'MAXLEN', '~', 100000, '*', 'job_id', job_id, 'type', event_type,
               'data', data, 'url', hook_url, 'event_id', id)
  end
  return id
end
local function settle(running_key, job_id, active)
  redis.call('SREM', running_key, job_id)
  if active then redis.call('SREM', active, job_id) end
end
"""

# A worker's writes are fenced by the attempt it runs (the job's `attempts` when it claimed it): once the job moved on
# (re-queued by a sweeper, or claimed again after a Redis failover lost the claim), a late write of an older attempt
# changes nothing. fenced(): true when the job's `status` is `running` the `attempts` of the fence, or when no fence
# ('') is given.
_FENCE = """
local function fenced(status, attempts, fence)
  if fence == '' then return true end
  return status == 'running' and attempts == fence
end
"""

# KEYS: job, events, webhooks. ARGV: events maxlen, job id, event type, event JSON, fence ('' for none).
APPEND = (
    _PRELUDE
    + _FENCE
    + """
local state = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'webhook_url', 'webhook_events')
if not state[1] then return false end
if not fenced(state[1], state[2], ARGV[5]) then return false end
return emit(KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], state[3], state[4])
"""
)

# A running job's progress. KEYS: job, events, webhooks. ARGV: fence, step, total, eta, events maxlen, job id, event
# type ('' for no event), event JSON. Returns 'lost' when the attempt no longer owns the job, 'cancel' when a cancel
# was requested, else 'go'.
STEP = (
    _PRELUDE
    + _FENCE
    + """
local state = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'cancel_requested', 'webhook_url', 'webhook_events')
if not fenced(state[1], state[2], ARGV[1]) then return 'lost' end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'total', ARGV[3], 'eta', ARGV[4])
if ARGV[7] ~= '' then emit(KEYS[2], KEYS[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8], state[4], state[5]) end
if state[3] then return 'cancel' end
return 'go'
"""
)

# Fields a running job's run writes about itself (how many jobs share its pipeline call). KEYS: job. ARGV: fence, then
# field/value pairs. Returns 1, or 0 when the run no longer owns the job.
NOTE = (
    _FENCE
    + """
local state = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if not fenced(state[1], state[2], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""
)

# The claim: a worker takes a job it popped (from RQ's intermediate list) or a batch mate (from the queue) and starts
# it, in one step, so that at every instant the job is in a list, running under a worker's lease, or terminal.
# Removing the id from the list is the claim: of two claimants (a worker, and a sweeper giving a stranded job back)
# only the one whose LREM removed it goes on.
# KEYS: job, events, running set, webhooks, source list, queue deadlines.
# ARGV: job id, worker id, now, running ttl, events maxlen, started event JSON, expired event JSON, terminal ttl,
# then field/value pairs to set (total steps, provenance, batch size).
# The first attempt leaves the TTLs of the record and its stream as the job's creation set them (they cover waiting
# until its queue deadline, then running and keeping the result); a later one (re-queued, with a new deadline) sets
# them from now.
# Returns the attempt number (the fence of every later write of this run), or why not: 'gone' (not in the list, or no
# record), 'expired' (waited past its queue deadline: ended `expired` here), or the status it has (e.g. 'canceled').
CLAIM = (
    _PRELUDE
    + """
if redis.call('LREM', KEYS[5], 1, ARGV[1]) == 0 then return 'gone' end
redis.call('ZREM', KEYS[6], ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'attempts', 'active_key', 'webhook_url',
                         'webhook_events', 'stranded_since', 'cancel_requested')
if not state[1] then return 'gone' end
if state[1] ~= 'queued' then return state[1] end
if state[2] and tonumber(ARGV[3]) > tonumber(state[2]) then
  redis.call('HSET', KEYS[1], 'status', 'expired', 'finished_at', ARGV[3])
  settle(KEYS[3], ARGV[1], state[4])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  emit(KEYS[2], KEYS[4], ARGV[5], ARGV[1], 'expired', ARGV[7], state[5], state[6])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  return 'expired'
end
local attempt = tonumber(state[3] or '0') + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'worker_id', ARGV[2], 'started_at', ARGV[3], 'step', 0,
           'attempts', attempt, unpack(ARGV, 9))
if state[7] or state[8] then redis.call('HDEL', KEYS[1], 'stranded_since', 'cancel_requested') end
redis.call('SADD', KEYS[3], ARGV[1])
if attempt > 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
emit(KEYS[2], KEYS[4], ARGV[5], ARGV[1], 'started', ARGV[6], state[5], state[6])
return attempt
"""
)

# KEYS: job, events, running set, webhooks, then one key per result image. ARGV: allowed statuses (comma-separated),
# new status, ttl, events maxlen, job id, event type, event JSON, fence ('' for none), image count n, the n images,
# then field/value pairs to set. Returns the new status (also when the fenced run repeats the outcome it wrote), 'was:'
# and the status that refused the change, or 'moved' when the fence no longer holds (false when the job is unknown).
# The images are written only when the change is made, so a late attempt never overwrites the images of the one that
# won. Entering `queued` takes it out of the running set.
TRANSITION = (
    _PRELUDE
    + _FENCE
    + """
local state = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'active_key', 'webhook_url', 'webhook_events')
local status = state[1]
if not status then return false end
if not string.find(',' .. ARGV[1] .. ',', ',' .. status .. ',', 1, true) then
  -- The same run writing the same outcome again (a retry after a reply lost to a dropped connection): done already.
  if ARGV[8] ~= '' and status == ARGV[2] and state[2] == ARGV[8] then return status end
  return 'was:' .. status
end
if not fenced(status, state[2], ARGV[8]) then return 'moved' end
local images = tonumber(ARGV[9])
for i = 1, images do redis.call('SET', KEYS[4 + i], ARGV[9 + i], 'EX', ARGV[3]) end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 10 + images))
if ARGV[2] == 'queued' then
  redis.call('SREM', KEYS[3], ARGV[5])
else
  settle(KEYS[3], ARGV[5], state[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
emit(KEYS[2], KEYS[4], ARGV[4], ARGV[5], ARGV[6], ARGV[7], state[4], state[5])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return ARGV[2]
"""
)

# KEYS: job, events, running set, webhooks. ARGV: job id, now, ttl, maxlen, canceled event JSON.
# queued → canceled at once ('dequeued': the caller then takes it off its queue, core/queueing.py); running →
# 'requested'; otherwise the status as is.
CANCEL = (
    _PRELUDE
    + """
local state = redis.call('HMGET', KEYS[1], 'status', 'active_key', 'webhook_url', 'webhook_events')
local status = state[1]
if not status then return false end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2])
  settle(KEYS[3], ARGV[1], state[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  emit(KEYS[2], KEYS[4], ARGV[4], ARGV[1], 'canceled', ARGV[5], state[3], state[4])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return 'dequeued'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'requested'
end
return status
"""
)
