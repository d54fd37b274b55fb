-- settle(results) + claim(n), one round trip.
-- ARGV: worker, lease_ms, n, 5 limits (common.lua read_limits), then 6 fields per settlement:
-- id, fence, outcome (ok|retry|dead|cancelled|release|handback), data, delay_ms, history.
-- data is the result JSON for ok and the error JSON otherwise; delay_ms the retry's backoff.
-- Returns {rejected ids, claimed tasks (11 fields each), ms until the worker should look again
-- (the next delayed task falls due, or the rate limit's next token) or '', the queue's default
-- retry policy (JSON) or ''}.
local worker, lease_ms, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limits = read_limits(4)
local rejected = {}
local CLAIM_FIELDS = 11
-- Successes leave `active` and count in `stats` once per call, not once per task.
local succeeded = {}

for i = 9, #ARGV, 6 do
  local id, fence, outcome, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local delay_ms, hist = tonumber(ARGV[i + 4]) or 0, ARGV[i + 5]
  local t = key.task(id)
  local cur = redis.call('HMGET', t, 'state', 'fence', 'history', 'attempt_ms',
    unpack(FINISH_FIELDS))
  -- The fence token: a zombie whose lease expired and was re-claimed cannot settle.
  if cur[1] ~= 'active' or cur[2] ~= fence then
    rejected[#rejected + 1] = id
  elseif outcome == 'ok' then
    -- The common case (a success wins over a cancel requested meanwhile) in as few calls as
    -- it takes: the fields read above and one HSET (its EXPIRE aside; `active` and the stats
    -- once per batch).
    local extra = {'result', data}
    local history = history_with(hist, cur[3], cur[4])
    if history then extra[3], extra[4] = 'history', history end
    finish(id, 'succeeded', {cur[5], cur[6], cur[7], cur[8], cur[9]}, extra, true, true)
    succeeded[#succeeded + 1] = id
  else
    push_history(id, hist)
    if outcome == 'cancelled' or cancel_requested(id) then
      -- The user's cancel wins over a failure, a retry, a drain or a hand-back.
      finish(id, 'cancelled')
    elseif outcome == 'retry' then
      local f = redis.call('HINCRBY', t, 'failures', 1)
      local deadline = tonumber(redis.call('HGET', t, 'deadline_ms')) or 0
      local ma = tonumber(redis.call('HGET', t, 'max_attempts')) or 0
      local due = now + delay_ms
      if ma > 0 and f >= ma then
        dead_letter(id, with_reason(data, 'MaxAttemptsExceeded', 'attempt ' .. f .. ' of ' .. ma .. ' failed'), limits)
      elseif deadline > 0 and due > deadline then
        dead_letter(id, with_reason(data, 'DeadlineExceeded', 'the next retry would start past the task deadline'), limits)
      else
        redis.call('HSET', t, 'state', 'retrying', 'error', data, 'next_retry_ms', due)
        redis.call('HDEL', t, 'owner')
        redis.call('ZREM', key.active, id)
        redis.call('ZADD', key.delayed, due, id)
        redis.call('HINCRBY', key.stats, 'retried', 1)
        notify(id, 'retrying')
      end
    elseif outcome == 'dead' then
      redis.call('HINCRBY', t, 'failures', 1)
      dead_letter(id, data, limits)
    elseif outcome == 'handback' then
      -- The worker has no handler for the type (a rolling upgrade, two apps on one queue): not
      -- an attempt. Back on the queue after a growing delay, so a worker that has the handler
      -- can take it; dead-lettered after handback_limit hand-backs.
      redis.call('HINCRBY', t, 'attempt', -1)
      redis.call('HDEL', t, 'owner')
      redis.call('ZREM', key.active, id)
      local backs = redis.call('HINCRBY', t, 'handbacks', 1)
      if backs > limits.handback_limit then
        dead_letter(id, data, limits)
      else
        local delay = math.floor(math.min(limits.handback_delay_ms * 2 ^ (backs - 1), 60000))
        redis.call('HSET', t, 'state', 'queued', 'error', data)
        redis.call('ZADD', key.delayed, now + delay, id)
        notify(id, 'queued')
      end
    else -- release: handed back unfinished (drain), not a failure
      redis.call('ZREM', key.active, id)
      redis.call('HDEL', t, 'owner')
      requeue_front(id)
      notify(id, 'queued')
      wake()
    end
  end
end

for s = 1, #succeeded, 1000 do
  redis.call('ZREM', key.active, unpack(succeeded, s, math.min(s + 999, #succeeded)))
end
if #succeeded > 0 then
  redis.call('HINCRBY', key.stats, 'succeeded', #succeeded)
  record_done(succeeded)
end

reap(limits)
local claimed = {}
local paused = limits.paused

-- The queue's rate limit, a token bucket in Redis time: `rate_tasks` tokens a `rate_per_ms`,
-- at most one period's worth saved up. Returns how many claims it allows now.
local bucket_tokens = nil
local function tokens_allowed()
  if limits.rate_tasks <= 0 or limits.rate_per_ms <= 0 then return n end
  local b = redis.call('HMGET', key.rate, 'tokens', 'ms')
  local cap = limits.rate_tasks
  local tokens = tonumber(b[1]) or cap
  local last = tonumber(b[2]) or now
  bucket_tokens = math.min(cap, tokens + (now - last) * cap / limits.rate_per_ms)
  return math.floor(bucket_tokens)
end
local function spend_tokens(count)
  if bucket_tokens == nil then return end
  bucket_tokens = bucket_tokens - count
  redis.call('HSET', key.rate, 'tokens', tostring(bucket_tokens), 'ms', now)
  redis.call('PEXPIRE', key.rate, limits.rate_per_ms * 2 + 1000)
end
-- How many more may run at once under the queue-wide maxConcurrent.
local function room()
  if limits.max_concurrent <= 0 then return n end
  return math.max(0, limits.max_concurrent - redis.call('ZCARD', key.active))
end

local asked, want = n, n
if n > 0 and not paused then want = math.min(n, tokens_allowed(), room()) end
if want > 0 and not paused then
  local n = want
  -- Due delayed work (runAt, retry backoff, hand-backs) becomes ready.
  local due = redis.call('ZRANGE', key.delayed, '-inf', now, 'BYSCORE', 'LIMIT', 0, 256)
  if #due > 0 then wake() end
  for _, id in ipairs(due) do
    redis.call('ZREM', key.delayed, id)
    if redis.call('EXISTS', key.task(id)) == 1 then
      redis.call('HSET', key.task(id), 'state', 'queued')
      redis.call('HDEL', key.task(id), 'next_retry_ms')
      enter(id)  -- a retry keeps its concurrency-key slot; a runAt task waits for one
      notify(id, 'queued')
    end
  end
  -- Ids cancelled while queued are dropped here, lazily: at most MAX_SKIPS a call, so a mass
  -- cancel costs many short claims, never one that stalls Redis.
  local MAX_SKIPS, skipped = 1000, 0
  local leases = {}  -- score, id pairs for one ZADD to `active`
  while #claimed < n * CLAIM_FIELDS and skipped < MAX_SKIPS do
    -- The most urgent ready tasks, from the highest non-empty priority, in one call.
    local pop = {'LMPOP', #READY_KEYS}
    for _, k in ipairs(READY_KEYS) do pop[#pop + 1] = k end
    pop[#pop + 1], pop[#pop + 2], pop[#pop + 3] = 'LEFT', 'COUNT', n - #claimed / CLAIM_FIELDS
    local got = redis.call(unpack(pop))
    if not got then break end
    for _, id in ipairs(got[2]) do
      local t = key.task(id)
      local f = redis.call('HMGET', t, 'state', 'deadline_ms', 'fence', 'attempt', 'started_ms',
        'notify', 'failures', 'max_attempts', 'type', 'payload', 'policy', 'timeout_ms', 'redact',
        'tp')
      local deadline = tonumber(f[2]) or 0
      if f[1] ~= 'queued' then
        skipped = skipped + 1
      elseif deadline > 0 and now > deadline then
        dead_letter(id, cjson.encode({type = 'DeadlineExceeded', reason = 'DeadlineExceeded',
          message = 'the task deadline passed before an attempt could start'}), limits)
      else
        local fence, attempt = (tonumber(f[3]) or 0) + 1, (tonumber(f[4]) or 0) + 1
        if f[5] then
          redis.call('HSET', t, 'state', 'active', 'owner', worker, 'attempt_ms', now,
            'fence', fence, 'attempt', attempt)
        else
          redis.call('HSET', t, 'state', 'active', 'owner', worker, 'attempt_ms', now,
            'fence', fence, 'attempt', attempt, 'started_ms', now)
        end
        leases[#leases + 1] = now + lease_ms
        leases[#leases + 1] = id
        if f[6] == '1' then emit(id, 'active') end
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = tostring(fence)
        claimed[#claimed + 1] = tostring(attempt)
        for j = 7, 14 do claimed[#claimed + 1] = f[j] or '' end
      end
    end
  end
  for s = 1, #leases, 1000 do
    redis.call('ZADD', key.active, unpack(leases, s, math.min(s + 999, #leases)))
  end
  spend_tokens(#claimed / CLAIM_FIELDS)
  if (#claimed >= n * CLAIM_FIELDS and want == asked) or skipped >= MAX_SKIPS then
    wake_if_ready()
  end
end
-- A settlement freed a slot of a queue-wide cap that held work back: a blocked worker may take it.
if limits.max_concurrent > 0 and #ARGV > 8 and not paused and room() > 0 then
  wake_if_ready()
end
-- How long until the next delayed task falls due (runAt, retry backoff), or the rate limit's
-- next token while ready work waits for one: an idle worker sleeps until then without asking
-- Redis again. Paused: nothing is due until resume, whose marker wakes workers. Relative, so the
-- worker's own clock does not matter.
local next_due = ''
if not paused then
  if bucket_tokens ~= nil and bucket_tokens < 1 then
    next_due = math.ceil((1 - bucket_tokens) * limits.rate_per_ms / limits.rate_tasks)
  elseif not (asked > 0 and want == 0) then  -- held back by maxConcurrent: a settlement wakes
    local head = redis.call('ZRANGE', key.delayed, 0, 0, 'WITHSCORES')
    if head[2] then next_due = math.max(0, tonumber(head[2]) - now) end
  end
end
return {rejected, claimed, next_due, limits.retry}
