-- requeue(ids) from the dead-letter queue: ARGV now_ms, ids... A revived task gets a fresh retry
-- budget; its attempt count and history carry on. Returns the ids that were revived.
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', k('dead'), id) == 1 and redis.call('EXISTS', tkey(id)) == 1 then
    local t = tkey(id)
    redis.call('PERSIST', t)
    redis.call('HSET', t, 'failures', 0, 'recoveries', 0)
    redis.call('HDEL', t, 'finished_ms', 'cancel')
    local prio = redis.call('HGET', t, 'prio')
    redis.call('HSET', t, 'state', 'queued')
    redis.call('RPUSH', k('ready:' .. prio), id)
    notify(id, 'queued', now)
    out[#out + 1] = id
  end
end
if #out > 0 then wake() end
return out
