"""The Lua scripts of the conversation store. Each names only keys of one conversation (the
record, its messages, its generations) or of one user's index, so it runs on one Redis Cluster
slot."""

from __future__ import annotations

# Shared by the scripts that read messages (KEYS[2]: the messages): the newest messages from
# list index `i` down, at most `limit` of them and `room` bytes together but one at least,
# oldest first, and the index of the next older one (-1: none is left). Each is read on its
# own, so nothing past them is copied.
_NEWEST = """
local function newest(i, limit, room)
  local taken = {}
  while i >= 0 and #taken < limit do
    local raw = redis.call('LINDEX', KEYS[2], i)
    if #taken > 0 and #raw > room then break end
    room = room - #raw
    taken[#taken + 1] = raw
    i = i - 1
  end
  local found = {}
  for j = #taken, 1, -1 do found[#found + 1] = taken[j] end
  return found, i
end
"""

# Shared by the scripts that store messages (KEYS[1]: the record, KEYS[2]: the messages).
# `bytes` in the record counts the stored JSON of its messages, for the owner's storage quota;
# `trimmed` counts the messages ever dropped from the front, which numbers each message for
# good (see PAGE).
_COUNTING = """
local function stored_bytes()
  local kept = redis.call('HGET', KEYS[1], 'bytes')
  if kept then return tonumber(kept) end
  -- Stored before its bytes were counted: count them once, a few messages at a time.
  local total, length = 0, redis.call('LLEN', KEYS[2])
  for first = 0, length - 1, 64 do
    for _, raw in ipairs(redis.call('LRANGE', KEYS[2], first, first + 63)) do
      total = total + #raw
    end
  end
  return total
end
local function trim_to(keep, bytes)
  local excess = redis.call('LLEN', KEYS[2]) - keep
  if excess <= 0 then return bytes end
  for first = 0, excess - 1, 64 do
    for _, raw in ipairs(redis.call('LRANGE', KEYS[2], first, math.min(first + 63, excess - 1))) do
      bytes = bytes - #raw
    end
  end
  redis.call('LTRIM', KEYS[2], excess, -1)
  redis.call('HINCRBY', KEYS[1], 'trimmed', excess)
  return bytes
end
"""

# KEYS: conversation, messages, generations.
# ARGV: owner, now_ms, ttl, history_messages, user_message, title, generation_id, project_id,
#       forget_before_ms (ids of generations started earlier have no keys left; '' keeps all),
#       max_messages, history_bytes.
# Returns {0} when another user owns the conversation, else {1, <bytes stored>, <json
# message>...}: the history, its last history_messages messages and at most history_bytes of
# them (the newest one at least). Leaves room for the answer: at most max_messages - 1
# messages stay, so storing the answer trims nothing unless turns of the conversation overlap,
# and the bytes returned plus the answer's are what the conversation will hold.
OPEN_TURN = (
    _NEWEST
    + _COUNTING
    + """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return {0} end
local bytes = 0
if owner then
  bytes = stored_bytes()
else
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[6],
             'created_at', ARGV[2], 'updated_at', ARGV[2])
end
local history = newest(redis.call('LLEN', KEYS[2]) - 1, tonumber(ARGV[4]), tonumber(ARGV[11]))
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'project_id', ARGV[8]) end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[5])
  bytes = bytes + #ARGV[5]
end
bytes = trim_to(tonumber(ARGV[10]) - 1, bytes)
local updated = redis.call('HGET', KEYS[1], 'updated_at')
if not updated or tonumber(ARGV[2]) > tonumber(updated) then updated = ARGV[2] end
redis.call('HSET', KEYS[1], 'updated_at', updated, 'generation', ARGV[7], 'bytes', bytes)
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[7])
  if ARGV[9] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[9]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {1, bytes, unpack(history)}
"""
)

# KEYS: conversation, messages, generations.
# ARGV: owner, answer, max_messages, ttl, created_at, generation_id.
# Stores nothing (returns 0) when the conversation that started the generation is gone: it
# was deleted, or deleted and started afresh under the same id, while the answer ran.
# Conversations older than the generations set accept any answer. An answer already stored
# last is not stored again (returns 1): a write that reached only some nodes of a Redis
# Cluster is sent again.
STORE_ANSWER = (
    _COUNTING
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if ARGV[6] ~= '' and redis.call('EXISTS', KEYS[3]) == 1
   and not redis.call('ZSCORE', KEYS[3], ARGV[6]) then return 0 end
local last = redis.call('LINDEX', KEYS[2], -1)
if ARGV[6] ~= '' and last then
  local stored = cjson.decode(last)
  if stored.role == 'assistant' and stored.generation_id == ARGV[6] then return 1 end
end
local bytes = stored_bytes() + #ARGV[2]
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'bytes', trim_to(tonumber(ARGV[3]), bytes))
redis.call('EXPIRE', KEYS[2], ARGV[4])
local updated = redis.call('HGET', KEYS[1], 'updated_at')
if not updated or tonumber(ARGV[5]) > tonumber(updated) then
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""
)

# KEYS: conversation, messages. ARGV: owner, before ('': from the newest), limit, max_bytes.
# A message's number counts every message the conversation ever stored: its place in the list
# plus `trimmed`, the messages dropped from the front. So a number names the same message for
# good, whatever is appended or trimmed later.
# Returns {0} unless `owner` owns it; else {1, <record as HGETALL>, <number of the oldest
# message returned, or -1 when no older one is left>, <json message>...}, oldest first: the
# newest messages numbered below `before`, at most `limit` of them and `max_bytes` together,
# but always at least one.
PAGE = (
    _NEWEST
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {0} end
local trimmed = tonumber(redis.call('HGET', KEYS[1], 'trimmed') or 0)
local i = redis.call('LLEN', KEYS[2]) - 1
if ARGV[2] ~= '' then i = math.min(i, tonumber(ARGV[2]) - trimmed - 1) end
local page, older = newest(i, tonumber(ARGV[3]), tonumber(ARGV[4]))
local result = {1, redis.call('HGETALL', KEYS[1]), -1}
if older >= 0 then result[3] = trimmed + older + 1 end
for _, raw in ipairs(page) do result[#result + 1] = raw end
return result
"""
)

# KEYS: conversation. ARGV: owner, title.
# Returns the record after the change, or an empty list unless `owner` owns it.
RENAME = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {} end
redis.call('HSET', KEYS[1], 'title', ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: conversation, messages, generations. ARGV: owner.
# Returns {0} unless `owner` owns it; else deletes the three keys and returns
# {1, <latest generation id or ''>, <generation id>...}.
DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {0} end
local found = {1, redis.call('HGET', KEYS[1], 'generation') or ''}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do found[#found + 1] = id end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return found
"""

# KEYS: a user's index. ARGV: member, score, member, score...
# Removes each member still at that score: one updated (or started afresh) since it was read
# stays.
PRUNE = """
for i = 1, #ARGV, 2 do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 0
"""
