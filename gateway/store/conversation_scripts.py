"""The Lua scripts of the conversation store that do not read its messages (those are in
tree_scripts.py). Each names only keys of one conversation or of one user's index, so it runs
on one Redis Cluster slot."""

from __future__ import annotations

# KEYS: conversation. ARGV: owner, title.
# Returns the record after the change, or an empty list unless `owner` owns it.
RENAME = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {} end
redis.call('HSET', KEYS[1], 'title', ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: conversation, messages, generations, nodes, links. ARGV: owner.
# Returns {0} unless `owner` owns it; else deletes the five keys and returns
# {1, <latest generation id or ''>, <generation id>...}.
DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {0} end
local found = {1, redis.call('HGET', KEYS[1], 'generation') or ''}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do found[#found + 1] = id end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
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
