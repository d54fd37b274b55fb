-- enqueue(batch). ARGV: groups. A group is what its tasks share, then the tasks:
--   count, type, prio, max_attempts, policy, timeout_ms, due_ms, delay_ms, deadline_ms,
--   ukey_ttl_ms, notify, cr, retention_s, gen, redact, wf, ck, ckmax, tp,
--   then count × (id, payload, idempotency key)
-- so a batch of one type sends 3 values a task, not 21 (see Broker.enqueue_many). tp is the W3C
-- trace context of the enqueue (empty unless tracing is on), handed to the worker with a claim. cr names the
-- Task of a CR-backed task, wf ("name/uid") the Workflow of a step, ck its concurrency key. due_ms is an
-- absolute time (runAt); delay_ms is counted from Redis's clock, not the caller's.
-- Idempotent: an existing task id, or a key held by another id, returns the id already there
-- (a key held by this very id whose task Redis lost is enqueued again).
-- Zero and empty fields are not stored: readers treat a missing field as 0 / empty.
-- The queue's resultRetention (config hash) wins over the caller's default retention_s.
-- Returns {1 if the queue is not yet in the registry (the caller adds it), the ids}.
local queue_retention = redis.call('HGET', key.config, 'result_retention_s')
local unregistered = redis.call('EXISTS', key.registered) == 0 and 1 or 0
local out = {}
local created = 0
local i = 1
while i <= #ARGV do
  local count, ttype, prio, max_attempts = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local policy, timeout_ms, due, delay_ms = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  local deadline_ms, ukey_ttl, notify_flag, cr = ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
  local retention, gen, redact, wf = queue_retention or ARGV[i + 12], ARGV[i + 13], ARGV[i + 14], ARGV[i + 15]
  local ck, ckmax, tp = ARGV[i + 16], ARGV[i + 17], ARGV[i + 18]
  i = i + 19
  if delay_ms > 0 then due = math.max(due, now + delay_ms) end
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
  opt('redact', redact)
  opt('wf', wf)
  opt('ck', ck)
  opt('ckmax', ckmax)
  opt('tp', tp)
  local ready = {}
  for j = i, i + 3 * count - 1, 3 do
    local id, payload, ukey = ARGV[j], ARGV[j + 1], ARGV[j + 2]
    local held = nil
    if ukey ~= '' and not redis.call('SET', key.unique(ukey), id, 'NX', 'PX', ukey_ttl) then
      held = redis.call('GET', key.unique(ukey))
    end
    if held and held ~= id then
      out[#out + 1] = held
    elseif redis.call('EXISTS', key.task(id)) == 1 then
      out[#out + 1] = id
    else
      redis.call('HSET', key.task(id), 'payload', payload, unpack(fields))
      if state == 'scheduled' then
        redis.call('ZADD', key.delayed, due, id)
      elseif ck ~= '' then
        enter(id)  -- waits for its key's slot
      else
        ready[#ready + 1] = id
      end
      if notify_flag == '1' then emit(id, state) end  -- known here: no HGET
      created = created + 1
      out[#out + 1] = id
    end
  end
  i = i + 3 * count
  -- One RPUSH per group keeps FIFO order and saves a call per task (unpack is capped: chunk).
  for s = 1, #ready, 1000 do
    redis.call('RPUSH', key.ready(prio), unpack(ready, s, math.min(s + 999, #ready)))
  end
  if #ready > 0 then wake() end
end
redis.call('HINCRBY', key.stats, 'enqueued', created)
return {unregistered, out}
