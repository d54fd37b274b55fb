-- enqueue(batch). ARGV: now_ms, then 15 fields per task (see Broker.enqueue_many).
-- Idempotent: an existing task id, or a held idempotency key, returns the id already there.
local now = tonumber(ARGV[1])
local out = {}
local ready = 0
for i = 2, #ARGV, 15 do
  local id, ttype, payload, prio = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local max_attempts, policy, timeout_ms = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local due, deadline_ms = tonumber(ARGV[i + 7]), ARGV[i + 8]
  local ukey, ukey_ttl, notify_flag, cr, retention =
    ARGV[i + 9], ARGV[i + 10], ARGV[i + 11], ARGV[i + 12], ARGV[i + 13]
  local gen = ARGV[i + 14]
  local held = nil
  if ukey ~= '' and not redis.call('SET', k('u:' .. ukey), id, 'NX', 'PX', ukey_ttl) then
    held = redis.call('GET', k('u:' .. ukey))
  end
  if held then
    out[#out + 1] = held
  elseif redis.call('EXISTS', tkey(id)) == 1 then
    out[#out + 1] = id
  else
    local state = 'queued'
    if due > now then state = 'scheduled' end
    redis.call('HSET', tkey(id), 'type', ttype, 'payload', payload, 'prio', prio,
      'state', state, 'attempt', 0, 'failures', 0, 'recoveries', 0,
      'max_attempts', max_attempts, 'policy', policy, 'timeout_ms', timeout_ms,
      'deadline_ms', deadline_ms, 'created_ms', now, 'fence', 0, 'notify', notify_flag,
      'cr', cr, 'retention', retention, 'gen', gen)
    if state == 'scheduled' then
      redis.call('ZADD', k('delayed'), due, id)
    else
      redis.call('RPUSH', k('ready:' .. prio), id)
      ready = ready + 1
    end
    redis.call('HINCRBY', k('stats'), 'enqueued', 1)
    notify(id, state, now)
    out[#out + 1] = id
  end
end
if ready > 0 then wake() end
return out
