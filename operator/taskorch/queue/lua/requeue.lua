-- requeue(ids) from the dead-letter queue: ARGV ids... A revived task gets a fresh retry budget;
-- its attempt count and history carry on. Returns the ids that were revived.
local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', key.dead, id) == 1 and redis.call('EXISTS', key.task(id)) == 1 then
    local t = key.task(id)
    redis.call('PERSIST', t)
    redis.call('HSET', t, 'failures', 0, 'recoveries', 0, 'handbacks', 0, 'state', 'queued')
    redis.call('HDEL', t, 'finished_ms', 'cancel')
    enter(id)
    notify(id, 'queued')
    out[#out + 1] = id
  end
end
if #out > 0 then wake() end
return out
