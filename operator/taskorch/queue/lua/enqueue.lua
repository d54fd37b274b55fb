-- enqueue(batch). ARGV: now_ms, then groups. A group is what its tasks share, then the tasks:
--   count, type, prio, max_attempts, policy, timeout_ms, due_ms, deadline_ms, ukey_ttl_ms,
--   notify, cr, retention_s, gen,   then count × (id, payload, idempotency key)
-- so a batch of one type sends 3 values a task, not 15 (see Broker.enqueue_many).
-- Idempotent: an existing task id, or a held idempotency key, returns the id already there.
-- Zero and empty fields are not stored: readers treat a missing field as 0 / empty.
-- Returns {1 if the queue had never been enqueued to (no stats yet), the ids}.
local now = tonumber(ARGV[1])
local new_queue = redis.call('EXISTS', k('stats')) == 0 and 1 or 0
local out = {}
local created = 0
local i = 2
while i <= #ARGV do
  local count, ttype, prio, max_attempts = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local policy, timeout_ms, due, deadline_ms = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6]), ARGV[i + 7]
  local ukey_ttl, notify_flag, cr, retention, gen =
    ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11], ARGV[i + 12]
  i = i + 13
  local state = 'queued'
  if due > now then state = 'scheduled' end
  local fields = {'type', ttype, 'prio', prio, 'state', state, 'created_ms', now,
    'retention', retention}
  local function opt(name, value)
    if value ~= '' and value ~= '0' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  opt('max_attempts', max_attempts)
  opt('policy', policy)
  opt('timeout_ms', timeout_ms)
  opt('deadline_ms', deadline_ms)
  opt('notify', notify_flag)
  opt('cr', cr)
  opt('gen', gen)
  local ready = {}
  for j = i, i + 3 * count - 1, 3 do
    local id, payload, ukey = ARGV[j], ARGV[j + 1], ARGV[j + 2]
    local held = nil
    if ukey ~= '' and not redis.call('SET', k('u:' .. ukey), id, 'NX', 'PX', ukey_ttl) then
      held = redis.call('GET', k('u:' .. ukey))
    end
    if held then
      out[#out + 1] = held
    elseif redis.call('EXISTS', tkey(id)) == 1 then
      out[#out + 1] = id
    else
      redis.call('HSET', tkey(id), 'payload', payload, unpack(fields))
      if state == 'scheduled' then
        redis.call('ZADD', k('delayed'), due, id)
      else
        ready[#ready + 1] = id
      end
      if notify_flag == '1' then emit(id, state, now) end  -- known here: no HGET
      created = created + 1
      out[#out + 1] = id
    end
  end
  i = i + 3 * count
  -- One RPUSH per group keeps FIFO order and saves a call per task (unpack is capped: chunk).
  for s = 1, #ready, 1000 do
    redis.call('RPUSH', k('ready:' .. prio), unpack(ready, s, math.min(s + 999, #ready)))
  end
  if #ready > 0 then wake() end
end
redis.call('HINCRBY', k('stats'), 'enqueued', created)
return {new_queue, out}
