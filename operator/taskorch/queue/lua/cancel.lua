-- cancel(id): ARGV id, now_ms. Returns the state the task was in (or false if unknown).
-- Queued/scheduled: cancelled now (a queued id is dropped lazily by claim). Active: flagged,
-- the worker cancels the handler at its next heartbeat and settles it as cancelled.
local id, now = ARGV[1], tonumber(ARGV[2])
local state = redis.call('HGET', tkey(id), 'state')
if not state then return false end
if state == 'queued' or state == 'scheduled' or state == 'retrying' then
  redis.call('ZREM', k('delayed'), id)
  finish(id, 'cancelled', now)
elseif state == 'active' then
  redis.call('HSET', tkey(id), 'cancel', '1')
end
return state
