-- Shared helpers, prepended to every script. KEYS[1] is the queue's key prefix,
-- "taskorch:{<namespace>/<queue>}:"; its hash tag keeps every key of a queue in one slot.
local prefix = KEYS[1]

-- Every key of the queue: the twin of queue/keys.py (tests/with_redis/test_keys.py holds them together).
local key = {
  delayed = prefix .. 'delayed',
  active = prefix .. 'active',
  dead = prefix .. 'dead',
  done = prefix .. 'done',
  marker = prefix .. 'marker',
  events = prefix .. 'events',
  stats = prefix .. 'stats',
  config = prefix .. 'config',
  rate = prefix .. 'rate',
  registered = prefix .. 'registered',
}
function key.task(id) return prefix .. 't:' .. id end
function key.ready(p) return prefix .. 'ready:' .. p end
function key.unique(ukey) return prefix .. 'u:' .. ukey end
function key.ck_waiting(ck) return prefix .. 'ck:' .. ck end
function key.ck_admitted(ck) return prefix .. 'ckn:' .. ck end

local EVENTS_MAXLEN = 100000
-- Finished (succeeded or cancelled) ids kept findable by the dashboard, newest first; their data
-- expires with the result retention whatever this index holds.
local DONE_MAX = 10000
local HISTORY = 10

-- Redis's clock, never the caller's: a worker whose clock runs fast must not take live leases.
-- (Redis 7 replicates a script by its effects, so TIME is allowed before writes.)
local now = (function()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end)()

-- The queue's policy: the fields of its `config` hash (written from its TaskQueue by the
-- operator), else the defaults the caller passes as 5 values from ARGV[i] (QueuePolicy's, the
-- same for every caller): how often a task may lose its worker, the DLQ's size and age bounds,
-- how often workers lacking a handler may hand a task back (and the first delay); then pause,
-- rate limit, the queue-wide cap on running tasks and the default retry policy (JSON).
local function read_limits(i)
  local c = redis.call('HMGET', key.config, 'max_recoveries', 'dlq_cap', 'dlq_retention_ms',
    'handback_limit', 'handback_delay_ms', 'paused', 'rate_tasks', 'rate_per_ms',
    'max_concurrent', 'retry')
  return {
    max_recoveries = tonumber(c[1]) or tonumber(ARGV[i]),
    dlq_cap = tonumber(c[2]) or tonumber(ARGV[i + 1]),
    dlq_retention_ms = tonumber(c[3]) or tonumber(ARGV[i + 2]),
    handback_limit = tonumber(c[4]) or tonumber(ARGV[i + 3]),
    handback_delay_ms = tonumber(c[5]) or tonumber(ARGV[i + 4]),
    paused = c[6] == '1',
    rate_tasks = tonumber(c[7]) or 0,
    rate_per_ms = tonumber(c[8]) or 0,
    max_concurrent = tonumber(c[9]) or 0,
    retry = c[10] or '',
  }
end

-- Wake one blocked worker; the claim that follows wakes the next if work remains.
-- (Also when delayed work is promoted: every idle worker gets its chance at it, not only the
-- one whose claim found it due.)
local function wake()
  if redis.call('LLEN', key.marker) == 0 then redis.call('RPUSH', key.marker, '1') end
end

-- The ready lists, highest priority first (an empty list does not exist in Redis, so one
-- EXISTS over them tells whether any work is ready, and one LMPOP takes the most urgent).
local READY_KEYS = {}
for p = 9, 0, -1 do READY_KEYS[#READY_KEYS + 1] = key.ready(p) end

-- wake, when any ready work waits.
local function wake_if_ready()
  if redis.call('EXISTS', unpack(READY_KEYS)) > 0 then wake() end
end

-- A state change on the stream the operator's status writer consumes.
local function emit(id, state)
  redis.call('XADD', key.events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'id', id, 'state', state, 'ts', now)
end

-- emit, for the tasks that asked for it (CR-backed ones) when they were enqueued.
local function notify(id, state)
  if redis.call('HGET', key.task(id), 'notify') == '1' then emit(id, state) end
end

-- The history with an attempt's record appended, timed by Redis (the attempt's claim, now), or
-- nil to leave it as it is. `raw` is the current history, `started` the attempt's claim time.
-- Undecodable JSON is skipped, never raised: a script error would abort the rest of a worker's
-- batch. A first attempt's record (the common case) is spliced as text, not decoded and encoded.
local function history_with(entry, raw, started)
  if entry == nil or entry == '' then return nil end
  local times = '"startTime":' .. (tonumber(started) or 'null') .. ',"finishTime":' .. now
  if (not raw or raw == '') and entry:match('^{".*}$') then
    return '[{' .. times .. ',' .. entry:sub(2) .. ']'
  end
  local ok, item = pcall(cjson.decode, entry)
  if not ok or type(item) ~= 'table' then return nil end
  local list = {}
  if raw and raw ~= '' then
    local fine, decoded = pcall(cjson.decode, raw)
    if fine and type(decoded) == 'table' then list = decoded end
  end
  item.startTime = tonumber(started)
  item.finishTime = now
  table.insert(list, item)
  while #list > HISTORY do table.remove(list, 1) end
  return cjson.encode(list)
end

local function push_history(id, entry)
  if entry == nil or entry == '' then return end
  local t = key.task(id)
  local raw, started = unpack(redis.call('HMGET', t, 'history', 'attempt_ms'))
  local history = history_with(entry, raw, started)
  if history then redis.call('HSET', t, 'history', history) end
end

local function cancel_requested(id)
  return redis.call('HGET', key.task(id), 'cancel') == '1'
end

-- Concurrency keys: a task with a key waits in its key's FIFO list until fewer than its
-- maxConcurrent tasks of the key are admitted (ready, running, or waiting for a retry), so at
-- most N run per key, in the order they came, and other keys and plain tasks never wait.
local function admit(ck)
  local waiting, admitted = key.ck_waiting(ck), key.ck_admitted(ck)
  while true do
    local head = redis.call('LINDEX', waiting, 0)
    if not head then return end
    local t = key.task(head)
    local state, max, prio = unpack(redis.call('HMGET', t, 'state', 'ckmax', 'prio'))
    if state ~= 'queued' then
      redis.call('LPOP', waiting)  -- cancelled (or expired) while it waited: dropped here
    elseif tonumber(redis.call('GET', admitted) or '0') >= (tonumber(max) or 1) then
      return
    else
      redis.call('LPOP', waiting)
      redis.call('INCR', admitted)
      redis.call('HSET', t, 'ckin', '1')
      redis.call('RPUSH', key.ready(prio), head)
      wake()
    end
  end
end

-- A queued task enters the queue: into its key's waiting list, or straight to ready.
local function enter(id)
  local t = key.task(id)
  local ck, prio = unpack(redis.call('HMGET', t, 'ck', 'prio'))
  if ck and redis.call('HGET', t, 'ckin') ~= '1' then
    redis.call('RPUSH', key.ck_waiting(ck), id)
    admit(ck)
  else
    redis.call('RPUSH', key.ready(prio), id)
  end
end

-- An admitted task ended: its slot goes to the next of its key. `ck` and `held` are the task's
-- fields of that name (read here when the caller has not).
local function leave(id, ck, held)
  local t = key.task(id)
  if held == nil then ck, held = unpack(redis.call('HMGET', t, 'ck', 'ckin')) end
  if ck and held == '1' then
    redis.call('HDEL', t, 'ckin')
    if redis.call('DECR', key.ck_admitted(ck)) <= 0 then redis.call('DEL', key.ck_admitted(ck)) end
    admit(ck)
  end
end

-- The task fields `finish` needs, in this order; a caller that read them already passes them.
local FINISH_FIELDS = {'notify', 'retention', 'ck', 'ckin', 'error'}

-- A terminal state. Succeeded and cancelled tasks expire after their retention; dead ones stay
-- as long as they are in the DLQ, which has bounds of its own (dead_letter). `f`: the task's
-- FINISH_FIELDS, if read already; `extra`: more field/value pairs to set in the same HSET;
-- `was_active`: the task held a lease, so it is in no delayed set; `batched`: the caller
-- removes it from `active` and counts it in `stats` itself, with its other tasks.
-- Index finished ids by finish time (one ZADD for a batch), keeping the newest DONE_MAX.
local function record_done(ids)
  for s = 1, #ids, 1000 do
    local add = {'ZADD', key.done}
    for i = s, math.min(s + 999, #ids) do
      add[#add + 1] = now
      add[#add + 1] = ids[i]
    end
    redis.call(unpack(add))
  end
  if #ids > 0 then redis.call('ZREMRANGEBYRANK', key.done, 0, -(DONE_MAX + 1)) end
end

local function finish(id, state, f, extra, was_active, batched)
  local t = key.task(id)
  if not f then f = redis.call('HMGET', t, unpack(FINISH_FIELDS)) end
  local set = {'HSET', t, 'state', state, 'finished_ms', now}
  for _, v in ipairs(extra or {}) do set[#set + 1] = v end
  redis.call(unpack(set))
  if state == 'succeeded' then
    -- `owner` stays: the worker that ran it. An earlier failure's traces go, when there are
    -- any (a first attempt's success, the common case, deletes nothing).
    if f[5] then redis.call('HDEL', t, 'next_retry_ms', 'error') end
  else
    redis.call('HDEL', t, 'owner', 'next_retry_ms')
  end
  if not batched then
    redis.call('ZREM', key.active, id)
    redis.call('HINCRBY', key.stats, state, 1)
    if state ~= 'dead' then record_done({id}) end
  end
  if not was_active then redis.call('ZREM', key.delayed, id) end
  leave(id, f[3], f[4])
  if state ~= 'dead' then
    local retention = tonumber(f[2] or '0')
    if retention and retention > 0 then redis.call('EXPIRE', t, retention) end
  end
  if f[1] == '1' then emit(id, state) end
end

local function drop_dead(ids)
  for _, id in ipairs(ids) do
    redis.call('ZREM', key.dead, id)
    redis.call('DEL', key.task(id))
  end
end

-- The DLQ's age bound: entries past its retention go with their data, so the set never points
-- at a task that is gone. Runs on every dead-lettering, claim and heartbeat (a bounded range).
local function trim_dead(limits)
  if limits.dlq_retention_ms > 0 then
    drop_dead(redis.call('ZRANGE', key.dead, '-inf', now - limits.dlq_retention_ms, 'BYSCORE',
      'LIMIT', 0, 100))
  end
end

local function dead_letter(id, err, limits)
  redis.call('HSET', key.task(id), 'error', err)
  redis.call('ZADD', key.dead, now, id)
  finish(id, 'dead')
  trim_dead(limits)
  local over = redis.call('ZCARD', key.dead) - limits.dlq_cap
  if over > 0 then drop_dead(redis.call('ZRANGE', key.dead, 0, over - 1)) end
end

-- A worker's error record with the queue's own reason for ending the task (the record's type,
-- message and traceback kept); a record cjson cannot read is replaced.
local function with_reason(err, reason, message)
  local ok, record = pcall(cjson.decode, err)
  if not ok or type(record) ~= 'table' then record = {type = reason} end
  record.reason = reason
  record.message = message .. (record.message and (': ' .. tostring(record.message)) or '')
  return cjson.encode(record)
end

local function requeue_front(id)
  local t = key.task(id)
  redis.call('HSET', t, 'state', 'queued')
  redis.call('LPUSH', key.ready(redis.call('HGET', t, 'prio')), id)
end

-- Expired leases are lost workers: back to the front, not counted as a handler failure, up to
-- max_recoveries times. Runs on every claim and every heartbeat, paused or not, so a lost task
-- is recovered even while all workers are busy. A cancel requested meanwhile wins.
local function reap(limits)
  trim_dead(limits)
  for _, id in ipairs(redis.call('ZRANGE', key.active, '-inf', now, 'BYSCORE', 'LIMIT', 0, 256)) do
    local t = key.task(id)
    redis.call('ZREM', key.active, id)
    local attempt, owner = unpack(redis.call('HMGET', t, 'attempt', 'owner'))
    if attempt then
      push_history(id, cjson.encode({attempt = tonumber(attempt), worker = owner,
        outcome = 'LostWorker'}))
      redis.call('HDEL', t, 'owner')
      if cancel_requested(id) then
        finish(id, 'cancelled')
      elseif redis.call('HINCRBY', t, 'recoveries', 1) > limits.max_recoveries then
        dead_letter(id, cjson.encode({type = 'LostWorkerLimit', reason = 'LostWorkerLimit',
          message = 'the task lost its worker ' .. (limits.max_recoveries + 1) .. ' times'}), limits)
      else
        requeue_front(id)
        redis.call('HINCRBY', key.stats, 'recovered', 1)
        notify(id, 'queued')
        wake()
      end
    end
  end
end
