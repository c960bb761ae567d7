"""The Redis broker's and result store's atomic operations, as Lua scripts run server-side.

Every key a script touches comes in KEYS[] (named in `keys.py`), never built
in the Lua, and all the keys of one call share a hash tag - which is what lets the same
scripts run on Redis Cluster, where a script may touch one hash slot only.

A queue's keys come as a block, in `QueueKeys.block()` order; `Q(b)` names the block that
starts at KEYS[b]. Time is Redis' own clock (TIME), so leases and ETAs agree across
machines. Messages are ids into a queue's hashes; its ready set is scored
(9 - priority) * 1e12 + id: ZPOPMIN gives the highest priority, oldest first. A leased
message's entry in `leased` says "<owner>\\n<worker>".
"""

COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function Q(b)
  return {ready = KEYS[b], delayed = KEYS[b + 1], signal = KEYS[b + 2], seq = KEYS[b + 3], payload = KEYS[b + 4],
    prio = KEYS[b + 5], deliveries = KEYS[b + 6], leased = KEYS[b + 7], holders = KEYS[b + 8], dead = KEYS[b + 9],
    dead_payload = KEYS[b + 10], dead_info = KEYS[b + 11], dead_seq = KEYS[b + 12]}
end
local function wake(q, count)
  local tokens = {}
  for k = 1, math.min(count, 64) do tokens[k] = 1 end
  redis.call('LPUSH', q.signal, unpack(tokens))
  redis.call('LTRIM', q.signal, 0, 63)
end
local function make_ready(q, id)
  local prio = redis.call('HGET', q.prio, id)
  if not prio then return false end
  redis.call('ZADD', q.ready, (9 - tonumber(prio)) * 1e12 + tonumber(id), id)
  return true
end
local function forget(q, id)
  redis.call('HDEL', q.payload, id)
  redis.call('HDEL', q.prio, id)
  redis.call('HDEL', q.deliveries, id)
  redis.call('HDEL', q.leased, id)
end
local function held_by_owner(lease, owner)
  return string.sub(lease, 1, #owner + 1) == owner .. '\\n'
end
local function give_back(q, match, running, keep_counts)
  local n = 0
  local leased = redis.call('HGETALL', q.leased)
  for i = 1, #leased, 2 do
    local id = leased[i]
    if match(leased[i + 1]) then
      redis.call('HDEL', q.leased, id)
      if not keep_counts and id ~= running then
        redis.call('HINCRBY', q.deliveries, id, -1)
      end
      if make_ready(q, id) then n = n + 1 end
    end
  end
  if n > 0 then wake(q, n) end
  return n
end
"""

PUSH = """
local function push_message(q, prio, eta, payload)
  local id = redis.call('INCR', q.seq)
  redis.call('HSET', q.payload, id, payload)
  redis.call('HSET', q.prio, id, prio)
  if eta > now then
    redis.call('ZADD', q.delayed, eta, id)
  else
    redis.call('ZADD', q.ready, (9 - prio) * 1e12 + id, id)
  end
end
"""

# KEYS: a publish block (6 keys) per queue. ARGV: (block number, priority, eta_ms or 0,
# payload) per message. A delayed message rings too: a waiting worker learns its due time.
PUBLISH = COMMON + PUSH + """
local qs, counts = {}, {}
for i = 1, #ARGV, 4 do
  local k = tonumber(ARGV[i])
  local q = qs[k]
  if not q then
    q = Q((k - 1) * 6 + 1)
    qs[k] = q
  end
  push_message(q, tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3])
  counts[k] = (counts[k] or 0) + 1
end
for k, count in pairs(counts) do wake(qs[k], count) end
return 1
"""

# Celery's wire queues (docs/celery-interop.md): kombu keeps a queue as Redis lists, one per
# priority step (0, 3, 6, 9; 0 first), named "<queue>" and "<queue>\\x06\\x16<step>"; its clients
# LPUSH and its workers BRPOP. A celeriac worker adopts messages from those lists into its own
# leased structure in the same script that leases them, so nothing is ever only in a
# worker's memory. Adopted messages get celeriac's priority 0 (that of everything celeriac
# itself puts on kombu's lists), in kombu's order: step 0 first, FIFO within a step.
# `at`: where the queue's four kombu lists start in KEYS.
ADOPT = """
local function adopt_kombu(q, at, limit)
  local adopted = 0
  for s = 0, 3 do
    while adopted < limit do
      local raw = redis.call('RPOP', KEYS[at + s])
      if not raw then break end
      local id = redis.call('INCR', q.seq)
      redis.call('HSET', q.payload, id, raw)
      redis.call('HSET', q.prio, id, 0)
      redis.call('ZADD', q.ready, 9e12 + id, id)
      adopted = adopted + 1
    end
  end
end
"""

# KEYS: a queue block (13 keys) per queue, then kombu's four lists of each wire queue, in order.
# ARGV: worker, owner, limit, then per queue '1' if it is a wire queue, else '0'.
# Returns (id, block number, priority, deliveries, payload) * n, or {ms until the next
# delayed message, or -1}.
FETCH = COMMON + ADOPT + """
local worker, owner, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = #ARGV - 3
local lease = owner .. '\\n' .. worker
local qs = {}
local kombu_at = n * 13 + 1
for k = 1, n do
  local q = Q((k - 1) * 13 + 1)
  qs[k] = q
  local due = redis.call('ZRANGEBYSCORE', q.delayed, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    make_ready(q, id)
    redis.call('ZREM', q.delayed, id)
  end
  if ARGV[3 + k] == '1' then
    adopt_kombu(q, kombu_at, limit)
    kombu_at = kombu_at + 4
  end
end
local chosen = {}
if n == 1 then
  local popped = redis.call('ZPOPMIN', qs[1].ready, limit)
  for i = 1, #popped, 2 do chosen[#chosen + 1] = {1, popped[i]} end
else
  local candidates = {}
  for k = 1, n do
    local head = redis.call('ZRANGE', qs[k].ready, 0, limit - 1, 'WITHSCORES')
    for i = 1, #head, 2 do
      candidates[#candidates + 1] = {tonumber(head[i + 1]), head[i], k}
    end
  end
  table.sort(candidates, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[3] < b[3]) end)
  for i = 1, math.min(limit, #candidates) do
    local c = candidates[i]
    redis.call('ZREM', qs[c[3]].ready, c[2])
    chosen[#chosen + 1] = {c[3], c[2]}
  end
end
local out, holding = {}, {}
for _, c in ipairs(chosen) do
  local k, id = c[1], c[2]
  local q = qs[k]
  local payload = redis.call('HGET', q.payload, id)
  if payload then
    if not holding[k] then
      redis.call('SADD', q.holders, worker)
      holding[k] = true
    end
    local count = redis.call('HINCRBY', q.deliveries, id, 1)
    redis.call('HSET', q.leased, id, lease)
    out[#out + 1] = id
    out[#out + 1] = k
    out[#out + 1] = tonumber(redis.call('HGET', q.prio, id) or '0')
    out[#out + 1] = count
    out[#out + 1] = payload
  end
end
if #out == 0 then
  local best = -1
  for k = 1, n do
    local nxt = redis.call('ZRANGE', qs[k].delayed, 0, 0, 'WITHSCORES')
    if #nxt > 0 then
      local wait = math.max(0, tonumber(nxt[2]) - now)
      if best < 0 or wait < best then best = wait end
    end
  end
  return {best}
end
return out
"""

# KEYS: a queue block. ARGV: id...
ACK = COMMON + """
local q = Q(1)
for i = 1, #ARGV do forget(q, ARGV[i]) end
return #ARGV
"""

# KEYS: a queue block. ARGV: owner, id...  (unstarted: the delivery does not count; only the
# owner's current lease: a stale owner's release leaves a message that was given to another)
RELEASE = COMMON + """
local q = Q(1)
local n = 0
for i = 2, #ARGV do
  local lease = redis.call('HGET', q.leased, ARGV[i])
  if lease and held_by_owner(lease, ARGV[1]) then
    redis.call('HDEL', q.leased, ARGV[i])
    redis.call('HINCRBY', q.deliveries, ARGV[i], -1)
    if make_ready(q, ARGV[i]) then n = n + 1 end
  end
end
if n > 0 then wake(q, n) end
return n
"""

# KEYS: a queue block. ARGV: owner, then (id, eta ms) pairs: leased messages that are not due
# yet (a Celery client's countdown) go to the delayed set; this delivery does not count.
DEFER = COMMON + """
local q = Q(1)
for i = 2, #ARGV, 2 do
  local lease = redis.call('HGET', q.leased, ARGV[i])
  if lease and held_by_owner(lease, ARGV[1]) then
    redis.call('HDEL', q.leased, ARGV[i])
    redis.call('HINCRBY', q.deliveries, ARGV[i], -1)
    redis.call('ZADD', q.delayed, tonumber(ARGV[i + 1]), ARGV[i])
  end
end
return 1
"""

# KEYS: queue blocks. ARGV: owner, running id or '', keep all counts ('1') or ''.
REQUEUE_OWNER = COMMON + """
local owner, running, keep = ARGV[1], ARGV[2], ARGV[3] == '1'
local n = 0
for b = 1, #KEYS, 13 do
  n = n + give_back(Q(b), function(lease) return held_by_owner(lease, owner) end, running, keep)
end
return n
"""

# KEYS: queue blocks. ARGV: worker...: give back what those workers hold (they stopped, or
# their lease expired), counting the delivery (a crash may have been the message's doing).
GIVE_BACK_WORKERS = COMMON + """
local n = 0
for b = 1, #KEYS, 13 do
  local q = Q(b)
  for _, worker in ipairs(ARGV) do
    local suffix = '\\n' .. worker
    n = n + give_back(q, function(lease) return string.sub(lease, -#suffix) == suffix end, '', true)
    redis.call('SREM', q.holders, worker)
  end
end
return n
"""

# KEYS: a queue block. ARGV: queue name, then (id, reason) pairs.
DEAD_LETTER = COMMON + """
local q, queue = Q(1), ARGV[1]
for i = 2, #ARGV, 2 do
  local id, reason = ARGV[i], ARGV[i + 1]
  local payload = redis.call('HGET', q.payload, id)
  if payload then
    local count = tonumber(redis.call('HGET', q.deliveries, id) or '0')
    local dead = redis.call('INCR', q.dead_seq)
    redis.call('HSET', q.dead_payload, dead, payload)
    redis.call('HSET', q.dead_info, dead, cjson.encode({reason = reason, queue = queue, deliveries = count,
      at = now / 1000}))
    redis.call('ZADD', q.dead, now, dead)
  end
  forget(q, id)
end
return 1
"""

# KEYS: a queue block  -> messages dropped (ready and delayed; leased ones stay)
PURGE = COMMON + """
local q = Q(1)
local n = 0
for _, key in ipairs({q.ready, q.delayed}) do
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    forget(q, id)
    n = n + 1
  end
  redis.call('DEL', key)
end
return n
"""

# KEYS: a queue block. ARGV: dead id, priority, ... (the priority each goes back with)
REQUEUE_DEAD = COMMON + """
local q = Q(1)
local n = 0
for i = 1, #ARGV, 2 do
  local dead = ARGV[i]
  local payload = redis.call('HGET', q.dead_payload, dead)
  if payload then
    local id = redis.call('INCR', q.seq)
    redis.call('HSET', q.payload, id, payload)
    redis.call('HSET', q.prio, id, ARGV[i + 1])
    make_ready(q, id)
    n = n + 1
  end
  redis.call('HDEL', q.dead_payload, dead)
  redis.call('HDEL', q.dead_info, dead)
  redis.call('ZREM', q.dead, dead)
end
if n > 0 then wake(q, n) end
return n
"""

# KEYS: workers, workerinfo. ARGV: worker, ttl_ms, info
HEARTBEAT = COMMON + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return now
"""

# KEYS: workers, workerinfo. ARGV: workers that hold messages. Drops expired leases, and
# returns those of the given workers that have no lease (now dead: what they hold goes back).
DEAD_HOLDERS = COMMON + """
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1)) do
  redis.call('ZREM', KEYS[1], worker)
  redis.call('HDEL', KEYS[2], worker)
end
local dead = {}
for _, worker in ipairs(ARGV) do
  if not redis.call('ZSCORE', KEYS[1], worker) then dead[#dead + 1] = worker end
end
return dead
"""

# KEYS: per result its hash, its 'done' list, and with celery = '1' Celery's key.
# ARGV: celery ('1' or ''), then (status, ttl_ms or 0, meta) per result.
# A final state is never replaced by an in-flight one. An in-flight meta lives in the
# hash; a final meta lives (once) in the 'done' list that waiting clients BLMOVE onto
# itself, and the hash keeps only its status. With celery = '1' the meta is also written
# where Celery's Redis backend keeps it ("celery-task-meta-<id>") and published on the
# channel of that name, which Celery's get() listens to.
STORE_RESULTS = """
local celery = ARGV[1] == '1'
local stride = 2
if celery then stride = 3 end
local final = {SUCCESS = true, FAILURE = true, REVOKED = true}
local k = 1
for i = 2, #ARGV, 3 do
  local status, ttl, meta = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local key, done = KEYS[k], KEYS[k + 1]
  local old = redis.call('HGET', key, 'status')
  if not (old and final[old] and not final[status]) then
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
      local ckey = KEYS[k + 2]
      if ttl > 0 then redis.call('SET', ckey, meta, 'PX', ttl) else redis.call('SET', ckey, meta) end
      redis.call('PUBLISH', ckey, meta)
    end
  end
  k = k + stride
end
return 1
"""

# KEYS: per task its 'done' list, its hash, and (ARGV[1] = '3') Celery's key.
# -> the meta of each (final or in-flight), or false
FETCH_RESULTS = """
local stride = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS, stride do
  local meta = redis.call('LINDEX', KEYS[k], 0)
  if not meta then meta = redis.call('HGET', KEYS[k + 1], 'meta') end
  if not meta and stride == 3 then meta = redis.call('GET', KEYS[k + 2]) end  -- a Celery worker's
  out[#out + 1] = meta or false
end
return out
"""

# KEYS: per part the chord's member hash, its state hash, and (celery = '1') the key where
# Celery's client writes the chord's size. ARGV: ttl ms, celery ('1' or ''), then per part:
# index, size, task id, failed (0/1), meta.
# -> per fired chord: {part number (1-based), total, {index, meta, index, meta, ...}}
# Members are a hash by header index (a re-run header counts once); 'fired' remembers which
# task fired the chord, and only that task is told again.
# A chord sent by a Celery client carries no size in its messages: Celery's client writes it to
# "<Celery's group key>.s" just before it publishes the last header task: until then the size
# is unknown and only a failure fires the chord.
CHORD_PARTS = """
local ttl, celery = tonumber(ARGV[1]), ARGV[2] == '1'
local stride = 2
if celery then stride = 3 end
local out = {}
local n, k = 0, 1
for i = 3, #ARGV, 5 do
  n = n + 1
  local parts, state = KEYS[k], KEYS[k + 1]
  local idx, size = ARGV[i], tonumber(ARGV[i + 1])
  -- 0: unknown here (a lazy header's member, or a Celery client's chord, whose size lives in
  -- Celery's key); the chord fires only once some member or that key has told the size.
  if size == 0 and celery then
    size = tonumber(redis.call('GET', KEYS[k + 2]) or '0')
  end
  local tid, failed, meta = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
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
  k = k + stride
end
return out
"""

# KEYS: the chord's state hash. ARGV: ttl ms, count -> members added so far (Task.add_to_chord)
CHORD_EXTEND = """
local added = redis.call('HINCRBY', KEYS[1], 'added', tonumber(ARGV[2]))
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1])) end
return added
"""

# KEYS: revoked, revoked:exp, revoked:seq. ARGV: expires ms, signal ('' for none), task id...
# Revocations: a zset by sequence number (what workers read incrementally) and a zset by
# expiry (what is trimmed); members are "seq|signal|task id" so equal ids revoked twice stay apart.
REVOKE = """
local expires, sig = tonumber(ARGV[1]), ARGV[2]
for i = 3, #ARGV do
  local seq = redis.call('INCR', KEYS[3])
  local member = seq .. '|' .. sig .. '|' .. ARGV[i]
  redis.call('ZADD', KEYS[1], seq, member)
  redis.call('ZADD', KEYS[2], expires, member)
end
return 1
"""

# KEYS: revoked, revoked:exp. ARGV: now ms, cursor -> {members after cursor...}; trims expired ones first
REVOKED_SINCE = """
local now, cursor = tonumber(ARGV[1]), ARGV[2]
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
for _, member in ipairs(old) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. cursor, '+inf')
"""

# KEYS: the rate key. ARGV: interval (microseconds) -> microseconds until the reserved start.
# On Redis' clock, so that workers on machines with different clocks share one schedule.
RESERVE_RATE_SLOT = """
local interval = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local keep_ms = math.floor((start - now + interval) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.0f', start + interval), 'PX', keep_ms)
return start - now
"""

# KEYS: control, control:exp, control:seq. ARGV: now ms, expires ms, command (JSON): the
# control log, like the revocations.
CONTROL_SEND = """
local now, expires = tonumber(ARGV[1]), tonumber(ARGV[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
for _, member in ipairs(old) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
end
local seq = redis.call('INCR', KEYS[3])
local member = seq .. '|' .. ARGV[3]
redis.call('ZADD', KEYS[1], seq, member)
redis.call('ZADD', KEYS[2], expires, member)
return seq
"""

# Beat: a lease (holder, fencing token, expiry on Redis' clock) and the last tick per entry.
# The token only grows, so a leader that lost its lease can never write again with it.
# KEYS: lease, ticks, pending (one schedule's tag); BEAT_FIRE's publish mode adds queue blocks.
BEAT_COMMON = """
local lease, ticks, pending = KEYS[1], KEYS[2], KEYS[3]
local function lease_is(holder, token)
  local cur = redis.call('HMGET', lease, 'holder', 'token', 'expires')
  return cur[1] == holder and tonumber(cur[2]) == tonumber(token) and tonumber(cur[3] or 0) > now
end
"""

# ARGV: holder, ttl_ms. Returns the token, or -1 while another holder leads.
BEAT_LEASE = COMMON + BEAT_COMMON + """
local cur = redis.call('HMGET', lease, 'holder', 'token', 'expires')
local holder, token, expires = cur[1], tonumber(cur[2] or 0), tonumber(cur[3] or 0)
if expires > now and holder and holder ~= ARGV[1] then return -1 end
if not (expires > now and holder == ARGV[1]) then
  token = token + 1
  redis.call('HSET', lease, 'holder', ARGV[1], 'token', token)
end
redis.call('HSET', lease, 'expires', now + tonumber(ARGV[2]))
return token
"""

# ARGV: holder. Returns nothing.
BEAT_RELEASE = COMMON + BEAT_COMMON + """
if redis.call('HGET', lease, 'holder') == ARGV[1] then
  redis.call('HDEL', lease, 'holder')
  redis.call('HSET', lease, 'expires', 0)
end
return 1
"""

# KEYS: lease, ticks, pending, then in publish mode a publish block (6 keys) per queue.
# ARGV: holder, token, mode ('publish': push the messages here; 'claim': keep them as pending
# for the caller to publish and confirm), then (entry, at, block number or 0, queue, priority,
# eta_ms, payload or '') per tick. Returns the positions (0-based) of the ticks recorded, or -1
# if the lease is not the caller's.
BEAT_FIRE = COMMON + PUSH + BEAT_COMMON + """
if not lease_is(ARGV[1], ARGV[2]) then return -1 end
local qs, counts, fired = {}, {}, {}
for i = 4, #ARGV, 7 do
  local entry, at = ARGV[i], ARGV[i + 1]
  local last = redis.call('HGET', ticks, entry)
  if not last or tonumber(last) < tonumber(at) then
    redis.call('HSET', ticks, entry, at)
    fired[#fired + 1] = (i - 4) / 7
    if ARGV[i + 6] ~= '' then
      if ARGV[3] == 'publish' then
        local k = tonumber(ARGV[i + 2])
        local q = qs[k]
        if not q then
          q = Q(3 + (k - 1) * 6 + 1)
          qs[k] = q
        end
        push_message(q, tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), ARGV[i + 6])
        counts[k] = (counts[k] or 0) + 1
      else
        redis.call('HSET', pending, entry .. '@' .. at,
          ARGV[i + 3] .. '\\n' .. ARGV[i + 4] .. '\\n' .. ARGV[i + 5] .. '\\n' .. ARGV[i + 6])
      end
    end
  end
end
for k, count in pairs(counts) do wake(qs[k], count) end
return fired
"""

# KEYS: the stream, the event counter. ARGV: entries to keep, event count, framed events. The
# counter numbers every event ever sent; each entry carries its last one ('e') and its count
# ('n'), so a reader sees a gap - events trimmed before it read them - and counts them.
EVENTS_XADD = """
local last = redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]))
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'b', ARGV[3], 'n', ARGV[2], 'e', last)
return last
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
