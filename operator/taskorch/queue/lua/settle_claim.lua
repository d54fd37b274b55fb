-- settle(results) + claim(n), one round trip.
-- ARGV: now_ms, worker, lease_ms, n, max_recoveries, dlq_cap, paused_ok, then 6 fields per
-- settlement: id, fence, outcome (ok|retry|dead|cancelled|release), data, retry_due_ms, history.
-- Returns {rejected ids, claimed tasks (9 fields each), due time of the next delayed task or ''}.
local now, worker = tonumber(ARGV[1]), ARGV[2]
local lease_ms, n = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_recoveries, dlq_cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local HISTORY = 10
local rejected = {}

for i = 8, #ARGV, 6 do
  local id, fence, outcome, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local due, hist = tonumber(ARGV[i + 4]), ARGV[i + 5]
  local t = tkey(id)
  local cur = redis.call('HMGET', t, 'state', 'fence')
  -- The fence token: a zombie whose lease expired and was re-claimed cannot settle.
  if cur[1] ~= 'active' or cur[2] ~= fence then
    rejected[#rejected + 1] = id
  else
    push_history(id, hist, HISTORY)
    if outcome == 'ok' then
      redis.call('HSET', t, 'result', data)
      redis.call('HDEL', t, 'error')
      finish(id, 'succeeded', now)
    elseif outcome == 'retry' then
      local f = redis.call('HINCRBY', t, 'failures', 1)
      local deadline = tonumber(redis.call('HGET', t, 'deadline_ms')) or 0
      local ma = tonumber(redis.call('HGET', t, 'max_attempts')) or 0
      if ma > 0 and f >= ma then
        dead_letter(id, data, now, dlq_cap)
      elseif deadline > 0 and due > deadline then
        dead_letter(id, data, now, dlq_cap)
      else
        redis.call('HSET', t, 'state', 'retrying', 'error', data, 'next_retry_ms', due)
        redis.call('HDEL', t, 'owner')
        redis.call('ZREM', k('active'), id)
        redis.call('ZADD', k('delayed'), due, id)
        redis.call('HINCRBY', k('stats'), 'retried', 1)
        notify(id, 'retrying', now)
      end
    elseif outcome == 'dead' then
      redis.call('HINCRBY', t, 'failures', 1)
      dead_letter(id, data, now, dlq_cap)
    elseif outcome == 'cancelled' then
      finish(id, 'cancelled', now)
    else -- release: handed back unfinished (drain), not a failure
      redis.call('ZREM', k('active'), id)
      redis.call('HDEL', t, 'owner')
      requeue_front(id)
      notify(id, 'queued', now)
      wake()
    end
  end
end

local claimed = {}
local paused = redis.call('EXISTS', k('paused')) == 1
if n > 0 and not paused then
  -- Due delayed work (runAt, retry backoff) becomes ready.
  for _, id in ipairs(redis.call('ZRANGE', k('delayed'), '-inf', now, 'BYSCORE', 'LIMIT', 0, 256)) do
    redis.call('ZREM', k('delayed'), id)
    local prio = redis.call('HGET', tkey(id), 'prio')
    if prio then
      redis.call('HSET', tkey(id), 'state', 'queued')
      redis.call('HDEL', tkey(id), 'next_retry_ms')
      redis.call('RPUSH', k('ready:' .. prio), id)
      notify(id, 'queued', now)
    end
  end
  -- Expired leases are lost workers: back to the front, not counted as a handler failure.
  for _, id in ipairs(redis.call('ZRANGE', k('active'), '-inf', now, 'BYSCORE', 'LIMIT', 0, 256)) do
    local t = tkey(id)
    redis.call('ZREM', k('active'), id)
    local attempt, owner = unpack(redis.call('HMGET', t, 'attempt', 'owner'))
    if attempt then
      push_history(id, cjson.encode({attempt = tonumber(attempt), worker = owner,
        outcome = 'LostWorker', finishTime = now}), HISTORY)
      redis.call('HDEL', t, 'owner')
      if redis.call('HINCRBY', t, 'recoveries', 1) > max_recoveries then
        dead_letter(id, cjson.encode({type = 'LostWorkerLimit', reason = 'LostWorkerLimit',
          message = 'the task lost its worker ' .. (max_recoveries + 1) .. ' times'}), now, dlq_cap)
      else
        requeue_front(id)
        redis.call('HINCRBY', k('stats'), 'recovered', 1)
        notify(id, 'queued', now)
      end
    end
  end
  for p = 9, 0, -1 do
    local list = k('ready:' .. p)
    while #claimed < n * 9 do
      local id = redis.call('LPOP', list)
      if not id then break end
      local t = tkey(id)
      local f = redis.call('HMGET', t, 'state', 'deadline_ms')
      local deadline = tonumber(f[2]) or 0
      if f[1] ~= 'queued' then
        -- cancelled (or expired) while queued: dropped lazily here
      elseif deadline > 0 and now > deadline then
        dead_letter(id, cjson.encode({type = 'DeadlineExceeded', reason = 'DeadlineExceeded',
          message = 'the task deadline passed before an attempt could start'}), now, dlq_cap)
      else
        local fence = redis.call('HINCRBY', t, 'fence', 1)
        local attempt = redis.call('HINCRBY', t, 'attempt', 1)
        redis.call('HSET', t, 'state', 'active', 'owner', worker, 'attempt_ms', now)
        redis.call('HSETNX', t, 'started_ms', now)
        redis.call('ZADD', k('active'), now + lease_ms, id)
        notify(id, 'active', now)
        local v = redis.call('HMGET', t, 'failures', 'max_attempts', 'type', 'payload',
          'policy', 'timeout_ms')
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = tostring(fence)
        claimed[#claimed + 1] = tostring(attempt)
        for j = 1, 6 do claimed[#claimed + 1] = v[j] or '' end
      end
    end
    if #claimed >= n * 9 then break end
  end
  if #claimed >= n * 9 then
    for p = 9, 0, -1 do
      if redis.call('LLEN', k('ready:' .. p)) > 0 then wake() break end
    end
  end
end
-- When the next delayed task (runAt, retry backoff) falls due: an idle worker sleeps until then
-- without asking Redis again. Paused: nothing is due until resume, whose marker wakes workers.
local next_due = ''
if not paused then
  local head = redis.call('ZRANGE', k('delayed'), 0, 0, 'WITHSCORES')
  next_due = head[2] or ''
end
return {rejected, claimed, next_due}
