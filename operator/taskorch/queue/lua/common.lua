-- Shared helpers, prepended to every script. KEYS[1] is the queue's key prefix,
-- "taskorch:{<namespace>/<queue>}:"; its hash tag keeps every key of a queue in one slot.
local prefix = KEYS[1]
local function k(name) return prefix .. name end
local function tkey(id) return prefix .. 't:' .. id end
local EVENTS_MAXLEN = 100000

-- Wake one blocked worker; the claim that follows wakes the next if work remains.
local function wake()
  if redis.call('LLEN', k('marker')) == 0 then redis.call('RPUSH', k('marker'), '1') end
end

-- A state change on the stream the operator's status writer consumes.
local function emit(id, state, now)
  redis.call('XADD', k('events'), 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'id', id, 'state', state, 'ts', now)
end

-- emit, for the tasks that asked for it (CR-backed ones) when they were enqueued.
local function notify(id, state, now)
  if redis.call('HGET', tkey(id), 'notify') == '1' then emit(id, state, now) end
end

local function push_history(id, entry, keep)
  if entry == nil or entry == '' then return end
  local raw = redis.call('HGET', tkey(id), 'history')
  local list = {}
  if raw and raw ~= '' then list = cjson.decode(raw) end
  table.insert(list, cjson.decode(entry))
  while #list > keep do table.remove(list, 1) end
  redis.call('HSET', tkey(id), 'history', cjson.encode(list))
end

local function finish(id, state, now)
  local t = tkey(id)
  redis.call('HSET', t, 'state', state, 'finished_ms', now)
  redis.call('HDEL', t, 'owner', 'next_retry_ms')
  redis.call('ZREM', k('active'), id)
  redis.call('HINCRBY', k('stats'), state, 1)
  local retention = tonumber(redis.call('HGET', t, 'retention') or '0')
  if retention and retention > 0 then redis.call('EXPIRE', t, retention) end
  notify(id, state, now)
end

local function dead_letter(id, err, now, dlq_cap)
  redis.call('HSET', tkey(id), 'error', err)
  redis.call('ZADD', k('dead'), now, id)
  finish(id, 'dead', now)
  local over = redis.call('ZCARD', k('dead')) - dlq_cap
  if over > 0 then
    local popped = redis.call('ZPOPMIN', k('dead'), over)  -- member, score, member, score...
    for i = 1, #popped, 2 do redis.call('DEL', tkey(popped[i])) end
  end
end

local function requeue_front(id)
  local prio = redis.call('HGET', tkey(id), 'prio')
  redis.call('HSET', tkey(id), 'state', 'queued')
  redis.call('LPUSH', k('ready:' .. prio), id)
end
