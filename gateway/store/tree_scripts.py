"""The Lua scripts of a conversation's tree of messages. Each names the keys of one
conversation only (one Redis Cluster slot): KEYS[1] its record, KEYS[2] its messages as stored
before the tree (a list, oldest first), KEYS[3] its generations, KEYS[4] its messages by id
(a hash of stored JSON), KEYS[5] its links (a hash: `p:<id>` a message's parent, '' for a
first message; `c:<id>` its children's ids in creation order, separated by spaces, `c:` the
first messages'; `g:<generation id>` the message a running generation answers, `-` once that
message was deleted). The record's `leaf` is the active leaf."""

from __future__ import annotations

# The tree's primitives, shared by every script below.
TREE = """
local function kids_of(id)
  local kids = {}
  local raw = redis.call('HGET', KEYS[5], 'c:' .. id)
  if raw then for kid in string.gmatch(raw, '%S+') do kids[#kids + 1] = kid end end
  return kids
end
local function set_kids(id, kids)
  if #kids == 0 then redis.call('HDEL', KEYS[5], 'c:' .. id)
  else redis.call('HSET', KEYS[5], 'c:' .. id, table.concat(kids, ' ')) end
end
local function parent_of(id)
  return redis.call('HGET', KEYS[5], 'p:' .. id) or ''
end
-- `known`: the parent's children as kids_of read them, if it did.
local function add_node(id, parent, raw, known)
  redis.call('HSET', KEYS[4], id, raw)
  local kids
  if known then
    if #known > 0 then kids = table.concat(known, ' ') end
  else
    kids = redis.call('HGET', KEYS[5], 'c:' .. parent)
  end
  if kids then kids = kids .. ' ' .. id else kids = id end
  redis.call('HSET', KEYS[5], 'p:' .. id, parent, 'c:' .. parent, kids)
  return #raw
end
-- The newest descendant, following the most recently created child at each step.
local function newest_below(id)
  local kids = kids_of(id)
  while #kids > 0 do
    id = kids[#kids]
    kids = kids_of(id)
  end
  return id
end
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
  for _, raw in ipairs(redis.call('HVALS', KEYS[4])) do total = total + #raw end
  return total
end
-- Messages stored as a list (before the tree, or by an instance that predates it) join the
-- tree below the active leaf, in order, as `msg_<number>`; a number counts every message the
-- list ever held, so it never names two messages. The new keys take the record's TTL.
local function migrate()
  local length = redis.call('LLEN', KEYS[2])
  if length == 0 then return end
  local trimmed = tonumber(redis.call('HGET', KEYS[1], 'trimmed') or 0)
  local parent = redis.call('HGET', KEYS[1], 'leaf') or ''
  for first = 0, length - 1, 64 do
    for j, raw in ipairs(redis.call('LRANGE', KEYS[2], first, first + 63)) do
      local id = 'msg_' .. (trimmed + first + j - 1)
      add_node(id, parent, raw)
      parent = id
    end
  end
  redis.call('HSET', KEYS[1], 'leaf', parent, 'trimmed', trimmed + length)
  redis.call('DEL', KEYS[2])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[4], ttl)
    redis.call('PEXPIRE', KEYS[5], ttl)
  end
end
-- Drops the oldest messages while more than `keep` are stored, as long as the oldest is the
-- one first message and starts no branches (every branch holds it), and is not `protect`.
-- Returns `bytes` less what was dropped, and how many messages are left.
local function trim_to(keep, bytes, protect)
  local stored = redis.call('HLEN', KEYS[4])
  while stored > keep do
    local roots = kids_of('')
    if #roots ~= 1 or roots[1] == protect then break end
    local root = roots[1]
    local kids = kids_of(root)
    if #kids > 1 then break end
    bytes = bytes - #redis.call('HGET', KEYS[4], root)
    redis.call('HDEL', KEYS[4], root)
    stored = stored - 1
    redis.call('HDEL', KEYS[5], 'p:' .. root, 'c:' .. root)
    if #kids == 1 then
      redis.call('HSET', KEYS[5], 'p:' .. kids[1], '', 'c:', kids[1])
    else
      redis.call('HDEL', KEYS[5], 'c:')
    end
    if redis.call('HGET', KEYS[1], 'leaf') == root then
      redis.call('HSET', KEYS[1], 'leaf', kids[1] or '')
    end
  end
  return bytes, stored
end
-- The path up from `id`: at most `limit` messages and `room` bytes of them, but one at least,
-- newest first, each as {id, raw}; and, if `want_more`, whether older ones are left.
local function path_up(id, limit, room, want_more)
  local taken = {}
  while id ~= '' and #taken < limit do
    local raw = redis.call('HGET', KEYS[4], id)
    if not raw then break end
    if #taken > 0 and #raw > room then break end
    room = room - #raw
    taken[#taken + 1] = {id, raw}
    id = parent_of(id)
  end
  local more = want_more and id ~= '' and redis.call('HEXISTS', KEYS[4], id) == 1
  return taken, more
end
local function expire_all(ttl)
  for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
end
-- After migrate(), which leaves no list (KEYS[2]).
local function expire_migrated(ttl)
  for _, i in ipairs({1, 3, 4, 5}) do redis.call('EXPIRE', KEYS[i], ttl) end
end
"""

# ARGV: owner, now_ms, ttl, history_messages, user_message ('': none), title, generation_id,
#       project_id, forget_before_ms (ids of generations started earlier have no keys left;
#       '': keep all), max_messages (trimmed to), history_bytes, parent ('~': the active leaf,
#       '': none, else a message id), regenerate ('' or an answer's id; '~': the active
#       leaf), the user message's
#       id, max_stored (MAX_STORED_MESSAGES), max_siblings, the answer's id.
# Returns {0} when another user owns the conversation (or none does and a message is named);
# {2, id} when a named message does not exist; {3, id} when `regenerate` names no answer to
# a stored message; {4, count} when the parent has max_siblings children already; {5, count}
# when the conversation is full; else {1, <bytes stored>, <title>, <updated_at>, <json
# message>...}: the history, the path up to the message answered, its last history_messages
# messages and at most history_bytes of them (the newest one at least), oldest first.
OPEN_TURN = (
    TREE
    + """
-- Nothing below changes the title or updated_at of a conversation that has an owner.
local record = redis.call('HMGET', KEYS[1], 'owner', 'title', 'updated_at')
local owner, title, updated = record[1], record[2], record[3]
if owner and owner ~= ARGV[1] then return {0} end
local named = ARGV[13] ~= '' or (ARGV[12] ~= '~' and ARGV[12] ~= '')
if not owner and named then return {0} end
local bytes = stored_bytes()
migrate()
local parent = ARGV[12]
local again = ARGV[13]
if again == '~' then again = redis.call('HGET', KEYS[1], 'leaf') or '' end
if ARGV[13] ~= '' then
  local raw = redis.call('HGET', KEYS[4], again)
  if not raw then return {2, again} end
  parent = parent_of(again)
  if cjson.decode(raw).role ~= 'assistant' or parent == '' then return {3, again} end
elseif parent == '~' then
  parent = redis.call('HGET', KEYS[1], 'leaf') or ''
elseif parent ~= '' and redis.call('HEXISTS', KEYS[4], parent) == 0 then
  return {2, parent}
end
local kids = kids_of(parent)
local siblings = #kids
if siblings >= tonumber(ARGV[16]) and (ARGV[13] ~= '' or ARGV[5] ~= '') then
  return {4, siblings}
end
local history = path_up(parent, tonumber(ARGV[4]), tonumber(ARGV[11]))
local answered = parent
if ARGV[5] ~= '' then answered = ARGV[14] end
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[6],
             'created_at', ARGV[2], 'updated_at', ARGV[2])
  title, updated = ARGV[6], ARGV[2]
end
if ARGV[5] ~= '' then bytes = bytes + add_node(ARGV[14], parent, ARGV[5], kids) end
local stored
bytes, stored = trim_to(tonumber(ARGV[10]) - 1, bytes, answered)
if stored + 1 > tonumber(ARGV[15]) then
  if ARGV[5] ~= '' then
    -- Taken back: the new message has no children yet.
    local above = parent_of(ARGV[14])
    local kids = kids_of(above)
    for i = #kids, 1, -1 do if kids[i] == ARGV[14] then table.remove(kids, i) end end
    set_kids(above, kids)
    redis.call('HDEL', KEYS[4], ARGV[14])
    redis.call('HDEL', KEYS[5], 'p:' .. ARGV[14])
    bytes = bytes - #ARGV[5]
    stored = stored - 1
  end
  redis.call('HSET', KEYS[1], 'bytes', bytes)
  return {5, stored}
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'project_id', ARGV[8]) end
if not updated or tonumber(ARGV[2]) > tonumber(updated) then updated = ARGV[2] end
redis.call('HSET', KEYS[1], 'updated_at', updated, 'generation', ARGV[7], 'bytes', bytes,
           'leaf', answered)
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[7])
  if ARGV[9] ~= '' then
    -- Generations that old have ended: an answer never stored leaves its link here.
    for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[9])) do
      redis.call('HDEL', KEYS[5], 'g:' .. gone)
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[9])
  end
  redis.call('HSET', KEYS[5], 'g:' .. ARGV[7], answered)
end
expire_migrated(ARGV[3])
local found = {1, bytes, title or '', tonumber(updated)}
for i = #history, 1, -1 do found[#found + 1] = history[i][2] end
return found
"""
)

# ARGV: owner, answer, max_messages, ttl, created_at, generation_id, the answer's id.
# Stores nothing (returns 0) when the conversation that started the generation is gone (it
# was deleted, or deleted and started afresh under the same id, while the answer ran), or
# the message it answers was deleted. Conversations older than the generations set accept
# any answer. An answer already stored is not stored again (returns 1): a write that reached
# only some nodes of a Redis Cluster is sent again. The answer becomes the active leaf if the
# message it answers still is; a turn opened before the tree answers the active leaf.
STORE_ANSWER = (
    TREE
    + """
-- Nothing below changes updated_at.
local record = redis.call('HMGET', KEYS[1], 'owner', 'updated_at')
local updated = record[2]
if record[1] ~= ARGV[1] then return 0 end
if ARGV[6] ~= '' and not redis.call('ZSCORE', KEYS[3], ARGV[6])
   and redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[4], ARGV[7]) == 1 then return 1 end
local bytes = stored_bytes()
migrate()
local leaf = redis.call('HGET', KEYS[1], 'leaf') or ''
local parent = leaf
if ARGV[6] ~= '' then
  parent = redis.call('HGET', KEYS[5], 'g:' .. ARGV[6]) or leaf
  redis.call('HDEL', KEYS[5], 'g:' .. ARGV[6])
end
if parent == '-' then return 0 end
-- Its question was trimmed while it ran: it stands first.
if parent ~= '' and redis.call('HEXISTS', KEYS[4], parent) == 0 then parent = '' end
bytes = bytes + add_node(ARGV[7], parent, ARGV[2])
if leaf == parent then redis.call('HSET', KEYS[1], 'leaf', ARGV[7]) end
redis.call('HSET', KEYS[1], 'bytes', (trim_to(tonumber(ARGV[3]), bytes, '')))
if not updated or tonumber(ARGV[5]) > tonumber(updated) then
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
end
expire_migrated(ARGV[4])
return 1
"""
)

# ARGV: owner, from ('': the active leaf; else the path above that message), limit, max_bytes.
# Returns {0} unless `owner` owns it; {2} when `from` names no stored message; else
# {1, <record as HGETALL>, <1 when older messages are left, else 0>, then for each message,
# oldest first: id, parent id, its siblings' ids ('' unless it has some), json}: the newest
# messages of the path, at most `limit` of them and `max_bytes` together, but one at least.
PAGE = (
    TREE
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {0} end
migrate()
local start = redis.call('HGET', KEYS[1], 'leaf') or ''
if ARGV[2] ~= '' then
  if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 0 then return {2} end
  start = parent_of(ARGV[2])
end
local page, more = path_up(start, tonumber(ARGV[3]), tonumber(ARGV[4]), true)
local result = {1, redis.call('HGETALL', KEYS[1]), more and 1 or 0}
for i = #page, 1, -1 do
  local id = page[i][1]
  local parent = parent_of(id)
  local siblings = redis.call('HGET', KEYS[5], 'c:' .. parent) or ''
  if not string.find(siblings, ' ', 1, true) then siblings = '' end
  for _, item in ipairs({id, parent, siblings, page[i][2]}) do result[#result + 1] = item end
end
return result
"""
)

# ARGV: owner, message id.
# Makes the active leaf the newest descendant of the message. Returns {0} unless `owner` owns
# the conversation, {2} when the message does not exist, else {1, <the new leaf>}.
SWITCH = (
    TREE
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {0} end
migrate()
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 0 then return {2} end
local leaf = newest_below(ARGV[2])
redis.call('HSET', KEYS[1], 'leaf', leaf)
return {1, leaf}
"""
)

# ARGV: owner, message id.
# Removes the message and its descendants. Returns {0} unless `owner` owns the conversation,
# {2} when the message does not exist, else {1, <bytes stored after>, <generation id>...}:
# the generations still answering a removed message, whose answers will not be stored. The
# active leaf, if removed, moves to the newest descendant of the newest remaining sibling,
# else to the parent.
DELETE_MESSAGE = (
    TREE
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {0} end
local bytes = stored_bytes()
migrate()
local id = ARGV[2]
if redis.call('HEXISTS', KEYS[4], id) == 0 then return {2} end
local parent = parent_of(id)
local kids = kids_of(parent)
for i = #kids, 1, -1 do if kids[i] == id then table.remove(kids, i) end end
set_kids(parent, kids)
local gone, leaf_gone = {}, false
local leaf = redis.call('HGET', KEYS[1], 'leaf') or ''
local queue, next = {id}, 1
while next <= #queue do
  local node = queue[next]
  next = next + 1
  for _, kid in ipairs(kids_of(node)) do queue[#queue + 1] = kid end
  bytes = bytes - #(redis.call('HGET', KEYS[4], node) or '')
  redis.call('HDEL', KEYS[4], node)
  redis.call('HDEL', KEYS[5], 'p:' .. node, 'c:' .. node)
  gone[node] = true
  if node == leaf then leaf_gone = true end
end
local found = {1, bytes}
local links = redis.call('HGETALL', KEYS[5])
for i = 1, #links, 2 do
  if string.sub(links[i], 1, 2) == 'g:' and gone[links[i + 1]] then
    redis.call('HSET', KEYS[5], links[i], '-')
    found[#found + 1] = string.sub(links[i], 3)
  end
end
if leaf_gone then
  if #kids > 0 then leaf = newest_below(kids[#kids]) else leaf = parent end
end
redis.call('HSET', KEYS[1], 'bytes', bytes, 'leaf', leaf)
found[2] = bytes
return found
"""
)

# ARGV: owner, message id, max messages.
# Returns {0} unless `owner` owns the conversation, {2} when the message does not exist, else
# {1, <record as HGETALL>, then for each message of the path from the first to it: id, json}.
PATH = (
    TREE
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {0} end
migrate()
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 0 then return {2} end
local path = path_up(ARGV[2], tonumber(ARGV[3]), 1e18)
local result = {1, redis.call('HGETALL', KEYS[1])}
for i = #path, 1, -1 do
  result[#result + 1] = path[i][1]
  result[#result + 1] = path[i][2]
end
return result
"""
)

# ARGV: owner, now_ms, ttl, title, project_id, then id, json for each message, first to last.
# Makes a new conversation holding that path (its last message active). Returns {0} when the
# id is taken, else {1, <bytes stored>}.
CREATE_PATH = (
    TREE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local bytes, parent = 0, ''
for i = 6, #ARGV, 2 do
  bytes = bytes + add_node(ARGV[i], parent, ARGV[i + 1])
  parent = ARGV[i]
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[4], 'created_at', ARGV[2],
           'updated_at', ARGV[2], 'bytes', bytes, 'leaf', parent)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'project_id', ARGV[5]) end
expire_all(ARGV[3])
return {1, bytes}
"""
)
