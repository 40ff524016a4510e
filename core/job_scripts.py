"""Lua scripts behind every change of a job's status, so each change and its bookkeeping happen atomically:
the record, the event stream, the set of running jobs, the owner's active-job set and the webhook fan-out.
"""

from __future__ import annotations

# Shared by the scripts. emit(): append an event to the job's stream and, when the job subscribed a webhook to
# that event type, to the webhook delivery stream. settle(): a job left `running`/`queued` for good.
_PRELUDE = """
local function emit(job_key, events_key, hooks_key, maxlen, job_id, event_type, data)
  local id = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'type', event_type, 'data', data)
  local hook = redis.call('HMGET', job_key, 'webhook_url', 'webhook_events')
  if hook[1] and hook[2] and string.find(',' .. hook[2] .. ',', ',' .. event_type .. ',', 1, true) then
    redis.call('XADD', hooks_key, 'MAXLEN', '~', 100000, '*', 'job_id', job_id, 'type', event_type,
               'data', data, 'url', hook[1], 'event_id', id)
  end
  return id
end
local function settle(job_key, running_key, job_id)
  redis.call('SREM', running_key, job_id)
  local active = redis.call('HGET', job_key, 'active_key')
  if active then redis.call('SREM', active, job_id) end
end
"""

# KEYS: job, events, webhooks. ARGV: events maxlen, job id, event type, event JSON.
APPEND = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return emit(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

# KEYS: job, events, running set, webhooks. ARGV: allowed statuses (comma-separated), new status, ttl, events
# maxlen, job id, event type, event JSON, then field/value pairs to set. Returns the new status, or the status that
# refused the change (false when the job is unknown). Entering `running` counts an attempt.
TRANSITION = (
    _PRELUDE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if not string.find(',' .. ARGV[1] .. ',', ',' .. status .. ',', 1, true) then return status end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 8))
if ARGV[2] == 'running' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('SADD', KEYS[3], ARGV[5])
elseif ARGV[2] == 'queued' then
  redis.call('SREM', KEYS[3], ARGV[5])
else
  settle(KEYS[1], KEYS[3], ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
emit(KEYS[1], KEYS[2], KEYS[4], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
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
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2])
  settle(KEYS[1], KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  emit(KEYS[1], KEYS[2], KEYS[4], ARGV[4], ARGV[1], 'canceled', ARGV[5])
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
