"""The Redis broker's atomic operations, as Lua scripts run server-side.

Each script takes the key prefix as ARGV[1] and builds key names the same way as
`celeriac._redis.Keys`. Time is Redis' own clock (TIME), so leases and ETAs agree
across machines. Messages are ids into hashes; a ready queue is a sorted set scored
(9 - priority) * 1e12 + id: ZPOPMIN gives the highest priority, oldest first.
"""

COMMON = """
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function route_of(id)
  local route = redis.call('HGET', p .. ':route', id)
  if not route then return nil, nil end
  local sep = string.find(route, ':', 1, true)
  return tonumber(string.sub(route, 1, sep - 1)), string.sub(route, sep + 1)
end
local function make_ready(id)
  local prio, queue = route_of(id)
  if not queue then return false end
  redis.call('ZADD', p .. ':ready:' .. queue, (9 - prio) * 1e12 + tonumber(id), id)
  redis.call('LPUSH', p .. ':signal:' .. queue, 1)
  redis.call('LTRIM', p .. ':signal:' .. queue, 0, 63)
  return true
end
local function forget(id)
  redis.call('HDEL', p .. ':payload', id)
  redis.call('HDEL', p .. ':route', id)
  redis.call('HDEL', p .. ':deliveries', id)
end
local function give_back_owner(owner, keep_counts, running)
  local held = p .. ':held:' .. owner
  local n = 0
  for _, id in ipairs(redis.call('HKEYS', held)) do
    if not keep_counts and id ~= running then
      redis.call('HINCRBY', p .. ':deliveries', id, -1)
    end
    if make_ready(id) then n = n + 1 end
  end
  redis.call('DEL', held)
  return n
end
local function give_back_worker(worker)
  local n = 0
  for _, owner in ipairs(redis.call('SMEMBERS', p .. ':owners:' .. worker)) do
    n = n + give_back_owner(owner, true, '')
  end
  redis.call('DEL', p .. ':owners:' .. worker)
  redis.call('SREM', p .. ':holders', worker)
  return n
end
"""

# ARGV: prefix, then (queue, priority, eta_ms or 0, payload) per message.
PUSH = """
local function push_message(queue, prio, eta, payload, wake)
  local id = redis.call('INCR', p .. ':seq')
  redis.call('HSET', p .. ':payload', id, payload)
  redis.call('HSET', p .. ':route', id, prio .. ':' .. queue)
  if eta > now then
    redis.call('ZADD', p .. ':delayed', eta, id)
  else
    redis.call('ZADD', p .. ':ready:' .. queue, (9 - prio) * 1e12 + id, id)
  end
  wake[queue] = (wake[queue] or 0) + 1
end
local function ring(wake)
  for queue, count in pairs(wake) do
    local tokens = {}
    for k = 1, math.min(count, 64) do tokens[k] = 1 end
    redis.call('LPUSH', p .. ':signal:' .. queue, unpack(tokens))
    redis.call('LTRIM', p .. ':signal:' .. queue, 0, 63)
  end
end
"""

PUBLISH = COMMON + PUSH + """
local wake = {}
for i = 2, #ARGV, 4 do
  push_message(ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], wake)
end
ring(wake)
return 1
"""

# Celery's wire queues (docs/celery-interop.md): kombu keeps a queue as Redis lists, one per
# priority step (0, 3, 6, 9; 0 first), named "<queue>" and "<queue>\x06\x16<step>"; its clients
# LPUSH and its workers BRPOP. A celeriac worker adopts messages from those lists into its own
# leased structure in the same script that leases them, so nothing is ever only in a
# worker's memory. Adopted messages get celeriac's priority 0 (that of everything celeriac
# itself puts on kombu's lists), in kombu's order: step 0 first, FIFO within a step.
ADOPT = """
local function adopt_kombu(wire, kombu_prefix, limit)
  local adopted = 0
  for queue in string.gmatch(wire, '[^,]+') do
    for _, step in ipairs({0, 3, 6, 9}) do
      local key = kombu_prefix .. queue
      if step > 0 then key = key .. string.char(6, 22) .. step end
      while adopted < limit do
        local raw = redis.call('RPOP', key)
        if not raw then break end
        local id = redis.call('INCR', p .. ':seq')
        redis.call('HSET', p .. ':payload', id, raw)
        redis.call('HSET', p .. ':route', id, '0:' .. queue)
        redis.call('ZADD', p .. ':ready:' .. queue, 9e12 + id, id)
        adopted = adopted + 1
      end
    end
  end
end
"""

# ARGV: prefix, worker, owner, limit, wire queues (comma-separated, or ''), kombu's key prefix, queue...
# Returns (id, queue, priority, deliveries, payload) * n, or {ms until the next delayed message, or -1}.
FETCH = COMMON + ADOPT + """
local worker, owner, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', p .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  make_ready(id)
  redis.call('ZREM', p .. ':delayed', id)
end
if ARGV[5] ~= '' then adopt_kombu(ARGV[5], ARGV[6], limit) end
local chosen = {}
if #ARGV == 7 then
  local popped = redis.call('ZPOPMIN', p .. ':ready:' .. ARGV[7], limit)
  for i = 1, #popped, 2 do chosen[#chosen + 1] = popped[i] end
else
  local candidates = {}
  for q = 7, #ARGV do
    local key = p .. ':ready:' .. ARGV[q]
    local head = redis.call('ZRANGE', key, 0, limit - 1, 'WITHSCORES')
    for i = 1, #head, 2 do
      candidates[#candidates + 1] = {tonumber(head[i + 1]), head[i], key}
    end
  end
  table.sort(candidates, function(a, b) return a[1] < b[1] end)
  for i = 1, math.min(limit, #candidates) do
    redis.call('ZREM', candidates[i][3], candidates[i][2])
    chosen[#chosen + 1] = candidates[i][2]
  end
end
local out = {}
if #chosen > 0 then
  redis.call('SADD', p .. ':holders', worker)
  redis.call('SADD', p .. ':owners:' .. worker, owner)
end
for _, id in ipairs(chosen) do
  local payload = redis.call('HGET', p .. ':payload', id)
  if payload then
    local prio, queue = route_of(id)
    local count = redis.call('HINCRBY', p .. ':deliveries', id, 1)
    redis.call('HSET', p .. ':held:' .. owner, id, worker)
    out[#out + 1] = id
    out[#out + 1] = queue
    out[#out + 1] = prio
    out[#out + 1] = count
    out[#out + 1] = payload
  end
end
if #out == 0 then
  local nxt = redis.call('ZRANGE', p .. ':delayed', 0, 0, 'WITHSCORES')
  if #nxt == 0 then return {-1} end
  return {math.max(0, tonumber(nxt[2]) - now)}
end
return out
"""

# ARGV: prefix, owner, id...
ACK = COMMON + """
local held = p .. ':held:' .. ARGV[2]
for i = 3, #ARGV do
  forget(ARGV[i])
  redis.call('HDEL', held, ARGV[i])
end
return #ARGV - 2
"""

# ARGV: prefix, owner, id...  (unstarted: the delivery does not count; only the current lease)
RELEASE = COMMON + """
local held = p .. ':held:' .. ARGV[2]
local n = 0
for i = 3, #ARGV do
  if redis.call('HDEL', held, ARGV[i]) == 1 then
    redis.call('HINCRBY', p .. ':deliveries', ARGV[i], -1)
    if make_ready(ARGV[i]) then n = n + 1 end
  end
end
return n
"""

# ARGV: prefix, owner, then (id, eta ms) pairs: leased messages that are not due yet (a Celery
# client's countdown) go to the delayed set; this delivery does not count.
DEFER = COMMON + """
local held = p .. ':held:' .. ARGV[2]
for i = 3, #ARGV, 2 do
  if redis.call('HDEL', held, ARGV[i]) == 1 then
    redis.call('HINCRBY', p .. ':deliveries', ARGV[i], -1)
    redis.call('ZADD', p .. ':delayed', tonumber(ARGV[i + 1]), ARGV[i])
  end
end
return 1
"""

# ARGV: prefix, owner, running id or '', keep all counts ('1') or ''
REQUEUE_OWNER = COMMON + """
return give_back_owner(ARGV[2], ARGV[4] == '1', ARGV[3])
"""

# ARGV: prefix, owner, then (id, reason) pairs
DEAD_LETTER = COMMON + """
local held = p .. ':held:' .. ARGV[2]
for i = 3, #ARGV, 2 do
  local id, reason = ARGV[i], ARGV[i + 1]
  local payload = redis.call('HGET', p .. ':payload', id)
  if payload then
    local prio, queue = route_of(id)
    local count = tonumber(redis.call('HGET', p .. ':deliveries', id) or '0')
    local dead = redis.call('INCR', p .. ':dead:seq')
    redis.call('HSET', p .. ':dead:payload', dead, payload)
    redis.call('HSET', p .. ':dead:info', dead, cjson.encode({reason = reason, queue = queue or '',
      deliveries = count, at = now / 1000}))
    redis.call('ZADD', p .. ':dead', now, dead)
  end
  forget(id)
  redis.call('HDEL', held, id)
end
return 1
"""

# ARGV: prefix, worker, ttl_ms, info
HEARTBEAT = COMMON + """
redis.call('ZADD', p .. ':workers', now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', p .. ':workerinfo', ARGV[2], ARGV[4])
return now
"""

# ARGV: prefix, worker  (a worker stops: drop its lease, give back what it holds)
UNREGISTER = COMMON + """
local n = give_back_worker(ARGV[2])
redis.call('ZREM', p .. ':workers', ARGV[2])
redis.call('HDEL', p .. ':workerinfo', ARGV[2])
return n
"""

# ARGV: prefix  (give back what workers with an expired lease held)
RECOVER = COMMON + """
local n = 0
local expired = redis.call('ZRANGEBYSCORE', p .. ':workers', '-inf', now - 1)
for _, worker in ipairs(expired) do
  redis.call('ZREM', p .. ':workers', worker)
  redis.call('HDEL', p .. ':workerinfo', worker)
end
for _, worker in ipairs(redis.call('SMEMBERS', p .. ':holders')) do
  if not redis.call('ZSCORE', p .. ':workers', worker) then
    n = n + give_back_worker(worker)
  end
end
return n
"""

# ARGV: prefix, queue...
PURGE = COMMON + """
local n = 0
local wanted = {}
for q = 2, #ARGV do
  wanted[ARGV[q]] = true
  local key = p .. ':ready:' .. ARGV[q]
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    forget(id)
    n = n + 1
  end
  redis.call('DEL', key)
end
for _, id in ipairs(redis.call('ZRANGE', p .. ':delayed', 0, -1)) do
  local _, queue = route_of(id)
  if queue and wanted[queue] then
    redis.call('ZREM', p .. ':delayed', id)
    forget(id)
    n = n + 1
  end
end
return n
"""

# ARGV: prefix, queue... -> per queue {ready, reserved, delayed}
SIZES = COMMON + """
local ready, reserved, delayed = {}, {}, {}
for q = 2, #ARGV do
  ready[ARGV[q]] = redis.call('ZCARD', p .. ':ready:' .. ARGV[q])
  reserved[ARGV[q]] = 0
  delayed[ARGV[q]] = 0
end
for _, worker in ipairs(redis.call('SMEMBERS', p .. ':holders')) do
  for _, owner in ipairs(redis.call('SMEMBERS', p .. ':owners:' .. worker)) do
    for _, id in ipairs(redis.call('HKEYS', p .. ':held:' .. owner)) do
      local _, queue = route_of(id)
      if queue and reserved[queue] then reserved[queue] = reserved[queue] + 1 end
    end
  end
end
for _, id in ipairs(redis.call('ZRANGE', p .. ':delayed', 0, -1)) do
  local _, queue = route_of(id)
  if queue and delayed[queue] then delayed[queue] = delayed[queue] + 1 end
end
local out = {}
for q = 2, #ARGV do
  out[#out + 1] = {ARGV[q], ready[ARGV[q]], reserved[ARGV[q]], delayed[ARGV[q]]}
end
return out
"""

# ARGV: prefix, dead id... (none = all)
REQUEUE_DEAD = COMMON + """
local ids = {}
if #ARGV == 1 then
  ids = redis.call('ZRANGE', p .. ':dead', 0, -1)
else
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local n = 0
for _, dead in ipairs(ids) do
  local payload = redis.call('HGET', p .. ':dead:payload', dead)
  local info = redis.call('HGET', p .. ':dead:info', dead)
  if payload and info then
    local queue = cjson.decode(info).queue
    local id = redis.call('INCR', p .. ':seq')
    redis.call('HSET', p .. ':payload', id, payload)
    redis.call('HSET', p .. ':route', id, '0:' .. queue)
    make_ready(id)
    n = n + 1
  end
  redis.call('HDEL', p .. ':dead:payload', dead)
  redis.call('HDEL', p .. ':dead:info', dead)
  redis.call('ZREM', p .. ':dead', dead)
end
return n
"""

# ARGV: prefix, celery (Celery's key prefix and '|': also Celery's key; '': not), then
# (task id, status, ttl_ms or 0, meta) per result.
# A final state is never replaced by an in-flight one. An in-flight meta lives in the
# hash; a final meta lives (once) in the 'done' list that waiting clients BLMOVE onto
# itself, and the hash keeps only its status. With celery = '1' the meta is also written
# where Celery's Redis backend keeps it ("celery-task-meta-<id>") and published on the
# channel of that name, which Celery's get() listens to.
STORE_RESULTS = """
local p = ARGV[1]
local celery = ARGV[2] ~= ''  -- '' or Celery's key prefix followed by '|'
local cprefix = string.sub(ARGV[2], 1, -2)
local final = {SUCCESS = true, FAILURE = true, REVOKED = true}
for i = 3, #ARGV, 4 do
  local id, status, ttl, meta = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local key = p .. ':r:' .. id
  local old = redis.call('HGET', key, 'status')
  if not (old and final[old] and not final[status]) then
    local done = p .. ':done:' .. id
    redis.call('DEL', done)
    if final[status] then
      redis.call('HSET', key, 'status', status)
      redis.call('HDEL', key, 'meta')
      redis.call('RPUSH', done, meta)
      if ttl > 0 then redis.call('PEXPIRE', done, ttl) end
    else
      redis.call('HSET', key, 'status', status, 'meta', meta)
    end
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
    if celery then
      local ckey = cprefix .. 'celery-task-meta-' .. id
      if ttl > 0 then redis.call('SET', ckey, meta, 'PX', ttl) else redis.call('SET', ckey, meta) end
      redis.call('PUBLISH', ckey, meta)
    end
  end
end
return 1
"""

# ARGV: prefix, Celery's key prefix, task id...  -> the meta of each (final or in-flight), or false
FETCH_RESULTS = """
local p = ARGV[1]
local out = {}
for i = 3, #ARGV do
  local meta = redis.call('LINDEX', p .. ':done:' .. ARGV[i], 0)
  if not meta then meta = redis.call('HGET', p .. ':r:' .. ARGV[i], 'meta') end
  if not meta then meta = redis.call('GET', ARGV[2] .. 'celery-task-meta-' .. ARGV[i]) end  -- a Celery worker's
  out[i - 2] = meta or false
end
return out
"""

# ARGV: prefix, ttl ms, celery group key prefix or '', then per part: group id, index, size, task id, failed (0/1), meta
# -> per fired chord: {part number (1-based), {index, meta, index, meta, ...}}
# Members are a hash by header index (a re-run header counts once); 'fired' remembers which
# task fired the chord, and only that task is told again.
# A chord sent by a Celery client carries no size in its messages: Celery's client writes it to
# "<Celery's group key>.s"; with celery (ARGV[3], Celery's group key prefix, or '') it is read there.
CHORD_PARTS = """
local p, ttl, celery = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
local n = 0
for i = 4, #ARGV, 6 do
  n = n + 1
  local gid, idx, size = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if size == 0 and celery ~= '' then
    -- Celery's client writes the size just before it publishes the last header task: until
    -- then the size is unknown and only a failure fires the chord.
    size = tonumber(redis.call('GET', celery .. gid .. '.s') or '0')
    if size == 0 then size = math.huge end
  end
  local tid, failed, meta = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local parts, state = p .. ':chord:' .. gid .. ':parts', p .. ':chord:' .. gid
  if redis.call('HSET', parts, idx, meta) == 1 then redis.call('HINCRBY', state, 'done', 1) end
  local done = tonumber(redis.call('HGET', state, 'done') or '0')
  -- the size the parts carried (a lazy header tells only its last part) + added members
  local known = tonumber(redis.call('HGET', state, 'size') or '0')
  if size > known then
    redis.call('HSET', state, 'size', size)
    known = size
  end
  local total = known + tonumber(redis.call('HGET', state, 'added') or '0')
  local fired = redis.call('HGET', state, 'fired')
  if not fired and (failed == '1' or (known > 0 and done >= total)) then
    redis.call('HSET', state, 'fired', tid)
    fired = tid
  end
  if ttl > 0 then
    redis.call('PEXPIRE', parts, ttl)
    redis.call('PEXPIRE', state, ttl)
  end
  if fired == tid then
    table.insert(out, {n, total, redis.call('HGETALL', parts)})
  end
end
return out
"""

# ARGV: prefix, ttl ms, group id, count -> members added to that chord so far (Task.add_to_chord)
CHORD_EXTEND = """
local state = ARGV[1] .. ':chord:' .. ARGV[3]
local added = redis.call('HINCRBY', state, 'added', tonumber(ARGV[4]))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', state, tonumber(ARGV[2])) end
return added
"""

# ARGV: prefix, now ms, expires ms, signal ('' for none), task id...
# Revocations: a zset by sequence number (what workers read incrementally) and a zset by
# expiry (what is trimmed); members are "seq|signal|task id" so equal ids revoked twice stay apart.
REVOKE = """
local p, now, expires, sig = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for i = 5, #ARGV do
  local seq = redis.call('INCR', p .. ':revoked:seq')
  local member = seq .. '|' .. sig .. '|' .. ARGV[i]
  redis.call('ZADD', p .. ':revoked', seq, member)
  redis.call('ZADD', p .. ':revoked:exp', expires, member)
end
return 1
"""

# ARGV: prefix, now ms, cursor -> {members after cursor...}; trims expired ones first
REVOKED_SINCE = """
local p, now, cursor = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local old = redis.call('ZRANGEBYSCORE', p .. ':revoked:exp', '-inf', '(' .. now)
for _, member in ipairs(old) do
  redis.call('ZREM', p .. ':revoked', member)
  redis.call('ZREM', p .. ':revoked:exp', member)
end
return redis.call('ZRANGEBYSCORE', p .. ':revoked', '(' .. cursor, '+inf')
"""

# ARGV: prefix, key, interval (microseconds) -> microseconds until the reserved start.
# On Redis' clock, so that workers on machines with different clocks share one schedule.
RESERVE_RATE_SLOT = """
local key = ARGV[1] .. ':rate:' .. ARGV[2]
local interval = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local start = math.max(now, tonumber(redis.call('GET', key) or '0'))
local keep_ms = math.floor((start - now + interval) / 1000) + 60000
redis.call('SET', key, string.format('%.0f', start + interval), 'PX', keep_ms)
return start - now
"""

# ARGV: prefix, now ms, expires ms, command (JSON): the control log, like the revocations.
CONTROL_SEND = """
local p, now, expires = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local old = redis.call('ZRANGEBYSCORE', p .. ':control:exp', '-inf', '(' .. now)
for _, member in ipairs(old) do
  redis.call('ZREM', p .. ':control', member)
  redis.call('ZREM', p .. ':control:exp', member)
end
local seq = redis.call('INCR', p .. ':control:seq')
local member = seq .. '|' .. ARGV[4]
redis.call('ZADD', p .. ':control', seq, member)
redis.call('ZADD', p .. ':control:exp', expires, member)
return seq
"""

# Beat: a lease (holder, fencing token, expiry on Redis' clock) and the last tick per entry.
# The token only grows, so a leader that lost its lease can never write again with it.
BEAT_COMMON = """
local lease, ticks, pending = p .. ':beat:' .. ARGV[2] .. ':lease', p .. ':beat:' .. ARGV[2] .. ':ticks',
  p .. ':beat:' .. ARGV[2] .. ':pending'
local function lease_is(holder, token)
  local cur = redis.call('HMGET', lease, 'holder', 'token', 'expires')
  return cur[1] == holder and tonumber(cur[2]) == tonumber(token) and tonumber(cur[3] or 0) > now
end
"""

# ARGV: prefix, name, holder, ttl_ms. Returns the token, or -1 while another holder leads.
BEAT_LEASE = COMMON + BEAT_COMMON + """
local cur = redis.call('HMGET', lease, 'holder', 'token', 'expires')
local holder, token, expires = cur[1], tonumber(cur[2] or 0), tonumber(cur[3] or 0)
if expires > now and holder and holder ~= ARGV[3] then return -1 end
if not (expires > now and holder == ARGV[3]) then
  token = token + 1
  redis.call('HSET', lease, 'holder', ARGV[3], 'token', token)
end
redis.call('HSET', lease, 'expires', now + tonumber(ARGV[4]))
return token
"""

# ARGV: prefix, name, holder. Returns nothing.
BEAT_RELEASE = COMMON + BEAT_COMMON + """
if redis.call('HGET', lease, 'holder') == ARGV[3] then
  redis.call('HDEL', lease, 'holder')
  redis.call('HSET', lease, 'expires', 0)
end
return 1
"""

# ARGV: prefix, name, holder, token, mode ('publish': push the messages here; 'claim': keep
# them as pending for the caller to publish and confirm), then (entry, at, queue, priority,
# eta_ms, payload or '') per tick. Returns the positions (0-based) of the ticks recorded, or -1
# if the lease is not the caller's.
BEAT_FIRE = COMMON + PUSH + BEAT_COMMON + """
if not lease_is(ARGV[3], ARGV[4]) then return -1 end
local wake, fired = {}, {}
for i = 6, #ARGV, 6 do
  local entry, at = ARGV[i], ARGV[i + 1]
  local last = redis.call('HGET', ticks, entry)
  if not last or tonumber(last) < tonumber(at) then
    redis.call('HSET', ticks, entry, at)
    fired[#fired + 1] = (i - 6) / 6
    if ARGV[i + 5] ~= '' then
      if ARGV[5] == 'publish' then
        push_message(ARGV[i + 2], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), ARGV[i + 5], wake)
      else
        redis.call('HSET', pending, entry .. '@' .. at,
          ARGV[i + 2] .. '\\n' .. ARGV[i + 3] .. '\\n' .. ARGV[i + 4] .. '\\n' .. ARGV[i + 5])
      end
    end
  end
end
ring(wake)
return fired
"""

# KEYS: the unique key; ARGV: task id, hold in ms. Returns the holder's id (ARGV[1] if claimed).
CLAIM_UNIQUE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return ARGV[1]
end
return redis.call('GET', KEYS[1])
"""

# KEYS: unique keys; ARGV: the task id holding each. Deletes only holds that task still has.
RELEASE_UNIQUE = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('DEL', key)
  end
end
return 0
"""
