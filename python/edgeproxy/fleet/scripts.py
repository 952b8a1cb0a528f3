"""The fleet's Lua scripts: each runs atomically in Redis, on Redis's clock (``TIME``), so N
sidecars with N clocks enforce one limit. The rules are ``limits.gcra`` and ``limits.local``'s,
written again in Lua (tests/integration/test_fleet_scripts.py runs both on the same requests).

Numbers cross as strings formatted with fixed decimals: Lua's ``tostring`` keeps 14 significant
digits, too few for epoch seconds with microseconds.
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
local function usd(x) return string.format('%.12f', x) end
"""

# KEYS: the rates' TAT keys, then each budget's hash and reservation zset.
# ARGV: n_rates, n_budgets, reservation id, hold seconds, then per rate (limit, cost), then per
# budget (limit, reserve, seconds to keep the budget's keys).
# Returns {1, spent...} when admitted; {0, index of the limit hit (1-based), wait ms, spent...}.
ADMIT = (
    _PRELUDE
    + """
local nr, nb = tonumber(ARGV[1]), tonumber(ARGV[2])
local rid, hold = ARGV[3], tonumber(ARGV[4])
local tats = {}
for i = 1, nr do
  local limit, cost = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  local step = 60.0 / limit
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * step
  local ahead = new_tat - now - 60.0
  if ahead > 0.000001 then
    if cost > limit then ahead = 60.0 end
    return {0, i, math.ceil(ahead * 1000)}
  end
  tats[i] = new_tat
end
local base = 4 + 2 * nr
local spent = {}
for j = 1, nb do
  local h, z = KEYS[nr + 2 * j - 1], KEYS[nr + 2 * j]
  local limit, reserve = tonumber(ARGV[base + 3 * j - 2]), tonumber(ARGV[base + 3 * j - 1])
  local stale = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now))
  for _, id in ipairs(stale) do
    local amount = tonumber(redis.call('HGET', h, 'r:' .. id))
    if amount then
      redis.call('HINCRBYFLOAT', h, 'reserved', usd(-amount))
      redis.call('HDEL', h, 'r:' .. id)
    end
  end
  if #stale > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', fmt(now)) end
  local s = tonumber(redis.call('HGET', h, 'spent')) or 0
  local r = tonumber(redis.call('HGET', h, 'reserved')) or 0
  if r < 0 then r = 0 end
  spent[j] = s
  if not (s + r < limit and s + r + reserve <= limit + 0.000000001) then
    local out = {0, nr + j, -1}
    for k = 1, j do out[3 + k] = usd(spent[k]) end
    return out
  end
end
for i = 1, nr do
  local ttl = math.ceil((tats[i] - now) * 1000) + 1000
  redis.call('SET', KEYS[i], fmt(tats[i]), 'PX', ttl)
end
local out = {1}
for j = 1, nb do
  local h, z = KEYS[nr + 2 * j - 1], KEYS[nr + 2 * j]
  local reserve, keep = tonumber(ARGV[base + 3 * j - 1]), tonumber(ARGV[base + 3 * j])
  redis.call('HINCRBYFLOAT', h, 'reserved', usd(reserve))
  redis.call('HSET', h, 'r:' .. rid, usd(reserve))
  redis.call('ZADD', z, fmt(now + hold), rid)
  redis.call('EXPIRE', h, keep)
  redis.call('EXPIRE', z, keep)
  out[1 + j] = usd(spent[j])
end
return out
"""
)

# KEYS: the TPM rates' TAT keys, each budget's hash and zset, then the usage hashes.
# ARGV: n_rates, n_budgets, n_usage, reservation id ('' for spend settled elsewhere), then per
# rate (limit, units), per budget (usd, seconds to keep), per usage hash (field, value) pairs
# as "count" then the pairs: HINCRBYFLOAT each.
SETTLE = (
    _PRELUDE
    + """
local nr, nb, nu = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rid = ARGV[4]
local at = 5
for i = 1, nr do
  local limit, units = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  at = at + 2
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then
    local new_tat = tat + units * 60.0 / limit
    if units < 0 and new_tat < now then new_tat = now end
    local ttl = math.ceil((new_tat - now) * 1000) + 1000
    if ttl > 0 then redis.call('SET', KEYS[i], fmt(new_tat), 'PX', ttl) end
  end
end
for j = 1, nb do
  local h, z = KEYS[nr + 2 * j - 1], KEYS[nr + 2 * j]
  local spent, keep = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  at = at + 2
  if rid ~= '' then
    local amount = tonumber(redis.call('HGET', h, 'r:' .. rid))
    if amount then
      redis.call('HINCRBYFLOAT', h, 'reserved', usd(-amount))
      redis.call('HDEL', h, 'r:' .. rid)
      redis.call('ZREM', z, rid)
    end
  end
  redis.call('HINCRBYFLOAT', h, 'spent', usd(spent))
  redis.call('EXPIRE', h, keep)
end
for u = 1, nu do
  local key = KEYS[nr + 2 * nb + u]
  local n = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, n do
    redis.call('HINCRBYFLOAT', key, ARGV[at], ARGV[at + 1])
    at = at + 2
  end
  redis.call('EXPIRE', key, 34560000)
end
return 1
"""
)

# The shared cache: an entry is a hash {v: compressed bytes, t: stored at (Redis ms)}.
# An entry of another shape (a key another writer put there) is a miss, never a script error:
# an error would mark Redis away for every sidecar's counters too.
CACHE_GET = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return false end
local r = redis.call('HMGET', KEYS[1], 'v', 't')
local stored = tonumber(r[2])
if not r[1] or not stored then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {r[1], tostring(now - stored), tostring(redis.call('PTTL', KEYS[1]))}
"""
CACHE_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Health: KEYS[1] the hash of ejections, ARGV: candidate key, seconds, JSON of the rest.
# The stored value and the message are "<until, Redis epoch seconds>\t<json>".
HEALTH_OPEN = (
    _PRELUDE
    + """
local value = fmt(now + tonumber(ARGV[2])) .. '\t' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('PUBLISH', KEYS[2], 'open\t' .. ARGV[1] .. '\t' .. ARGV[2] .. '\t' .. ARGV[3])
return 1
"""
)
HEALTH_CLOSED = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], 'closed\t' .. ARGV[1] .. '\t0\t' .. ARGV[2])
return 1
"""
# Every ejection still running: {now, key, value, key, value, ...}.
HEALTH_ALL = (
    _PRELUDE
    + """
local out = {fmt(now)}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local until_ = tonumber(string.match(all[i + 1], '^([^\t]+)'))
  if until_ and until_ > now then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""
)
