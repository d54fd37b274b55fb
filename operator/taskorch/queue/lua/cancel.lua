-- cancel(id): ARGV id, generation of the cancelling CR ('' from the SDK). Returns the state the
-- task was in, or false when Redis has no such task (nothing is created: a bare hash would make
-- a later enqueue of the id a no-op). Queued/scheduled/retrying: cancelled now (a queued id is
-- dropped lazily by claim). Active: flagged; the worker cancels the handler at its next
-- heartbeat, and every other way the attempt can end (failure, drain, lost worker) also ends it
-- cancelled.
local id, gen = ARGV[1], ARGV[2]
local t = key.task(id)
local state = redis.call('HGET', t, 'state')
if not state then return false end
if gen ~= '' then redis.call('HSET', t, 'gen', gen) end
if state == 'queued' or state == 'scheduled' or state == 'retrying' then
  finish(id, 'cancelled')
elseif state == 'active' then
  redis.call('HSET', t, 'cancel', '1')
end
return state
