"""The cost breaker's two Lua steps, each atomic in Redis.

`RESERVE` checks every limit of every scope a call is charged to and charges them all or none
(opening a scope's breaker when the call would cross a limit that settled spend alone reaches);
`SETTLE` turns a held reservation into the call's actual cost, or releases it.
"""

from __future__ import annotations

RESERVE = """
-- KEYS: reservation, scope set, operator overrides (and open breakers), then per scope its
--       spend of the day: a hash of `h:HOUR` (reserved + settled) and `s:HOUR` (settled)
-- ARGV: amount, now, scope count, hour, then per scope: name, its hourly and daily limits from
--       the settings, the tenant defaults from the settings (-2: unset), hourly and daily
--       window end
-- Limits are resolved here, in the same atomic step: the scope's override, its setting, then
-- (tenants only) the `tenant` override and setting; an override `none` means no limit. An open
-- breaker is the override field `open:SCOPE` (until|window|limit|used|wanted|opened at). A new
-- reservation returns the monthly budget override too (read in the same HMGET).
local state = redis.call('HGET', KEYS[1], 'state')
if state then return {1, state} end
local amount, now, n, hour = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
-- every override and open breaker this call may need, in one read
local wanted = {'limit:tenant:hourly', 'limit:tenant:daily', 'monthly_usd'}
for i = 0, n - 1 do
  local scope = ARGV[5 + i * 7]
  wanted[#wanted + 1] = 'limit:' .. scope .. ':hourly'
  wanted[#wanted + 1] = 'limit:' .. scope .. ':daily'
  wanted[#wanted + 1] = 'open:' .. scope
end
local overrides, got = {}, redis.call('HMGET', KEYS[3], unpack(wanted))
for i, name in ipairs(wanted) do
  if got[i] then overrides[name] = got[i] end
end
local function limit_of(scope, window, own, default)
  local v = overrides['limit:' .. scope .. ':' .. window]
  if v then return v == 'none' and -1 or tonumber(v) end
  if tonumber(own) ~= -2 then return tonumber(own) end
  if string.sub(scope, 1, 7) ~= 'tenant:' then return -1 end
  v = overrides['limit:tenant:' .. window]
  if v then return v == 'none' and -1 or tonumber(v) end
  if tonumber(default) ~= -2 then return tonumber(default) end
  return -1
end
-- {hour, day} of reserved + settled spend and of settled spend (the day only when asked)
local function spent(key, daily)
  if not daily then
    local row = redis.call('HMGET', key, 'h:' .. hour, 's:' .. hour)
    return {tonumber(row[1] or '0'), 0}, {tonumber(row[2] or '0'), 0}
  end
  local used, settled, row = {0, 0}, {0, 0}, redis.call('HGETALL', key)
  for j = 1, #row, 2 do
    local into = string.sub(row[j], 1, 2) == 'h:' and used or settled
    into[2] = into[2] + tonumber(row[j + 1])
    if string.sub(row[j], 3) == hour then into[1] = tonumber(row[j + 1]) end
  end
  return used, settled
end
local function int(v) return string.format('%d', v) end
for i = 0, n - 1 do
  local a = 5 + i * 7
  local scope = ARGV[a]
  local open = overrides['open:' .. scope]
  if open then
    local until_s, window, limit = string.match(open, '^([^|]*)|([^|]*)|([^|]*)|')
    if tonumber(until_s) > now then return {0, scope, until_s, window, 'held', limit} end
  end
  local limits = {limit_of(scope, 'hourly', ARGV[a + 1], ARGV[a + 3]),
    limit_of(scope, 'daily', ARGV[a + 2], ARGV[a + 4])}
  for w = 1, 2 do
    if limits[w] >= 0 and amount > limits[w] then  -- could never fit: refuse, keep it shut
      return {0, scope, ARGV[a + 4 + w], w == 1 and 'hourly' or 'daily', 'never', int(limits[w])}
    end
  end
  if limits[1] >= 0 or limits[2] >= 0 then
    local used, settled = spent(KEYS[4 + i], limits[2] >= 0)
    for w = 1, 2 do
      local limit, window, ends = limits[w], w == 1 and 'hourly' or 'daily', ARGV[a + 4 + w]
      if limit >= 0 and settled[w] + amount > limit then
        redis.call('HSET', KEYS[3], 'open:' .. scope, table.concat(
          {ends, window, int(limit), int(settled[w]), int(amount), ARGV[2]}, '|'))
        redis.call('SADD', KEYS[2], scope)
        return {0, scope, ends, window, 'opened', int(limit)}
      end
      if limit >= 0 and used[w] + amount > limit then  -- fits once calls in flight settle
        return {0, scope, ends, window, 'busy', int(limit)}
      end
    end
  end
end
local days = {}
for i = 0, n - 1 do
  -- the day's lifetime starts with it; a scope's first spend in an hour names it
  if redis.call('HINCRBY', KEYS[4 + i], 'h:' .. hour, amount) == amount then
    redis.call('EXPIRE', KEYS[4 + i], 172800)
    redis.call('SADD', KEYS[2], ARGV[5 + i * 7])
  end
  days[#days + 1] = KEYS[4 + i]
end
redis.call('HSET', KEYS[1], 'state', 'held', 'amount', amount, 'hour', hour,
  'days', table.concat(days, ','))
redis.call('EXPIRE', KEYS[1], 172800)
return {1, 'new', overrides['monthly_usd'] or false}
"""

SETTLE = """
-- KEYS: reservation, month spend, month tenant spend
-- ARGV: actual cost, tenant, settle (1) or release (0)
-- (a key's lifetime is set when this step creates it: an increment that returns exactly the
-- amount added found nothing there)
local r = redis.call('HMGET', KEYS[1], 'state', 'amount', 'hour', 'days')
if r[1] ~= 'held' then return -1 end
local amount = tonumber(r[2])
local actual = ARGV[3] == '1' and tonumber(ARGV[1]) or 0
for day in string.gmatch(r[4], '[^,]+') do
  redis.call('HINCRBY', day, 'h:' .. r[3], actual - amount)
  if ARGV[3] == '1' and redis.call('HINCRBY', day, 's:' .. r[3], actual) == actual then
    redis.call('EXPIRE', day, 172800)
  end
end
if ARGV[3] == '0' then
  redis.call('DEL', KEYS[1])
  return -1
end
redis.call('HSET', KEYS[1], 'state', 'settled', 'actual', actual)
if redis.call('HINCRBY', KEYS[3], ARGV[2], actual) == actual then
  redis.call('EXPIRE', KEYS[3], 40 * 86400)
end
local total = redis.call('INCRBY', KEYS[2], actual)
if total == actual then redis.call('EXPIRE', KEYS[2], 40 * 86400) end
return total
"""

# a shared hold (shared.py): one call settles its part, once
SETTLE_PART = """
-- KEYS: the hold, month spend, month tenant spend
-- ARGV: call id, its part of the hold, its actual cost, tenant
-- Returns the month's spend, or -1 when the part was settled already (or the hold is gone).
local r = redis.call('HMGET', KEYS[1], 'state', 'hour', 'days')
if r[1] ~= 'held' then return -1 end
if redis.call('HSETNX', KEYS[1], 'call:' .. ARGV[1], ARGV[3]) == 0 then return -1 end
local part, actual = tonumber(ARGV[2]), tonumber(ARGV[3])
for day in string.gmatch(r[3], '[^,]+') do
  redis.call('HINCRBY', day, 'h:' .. r[2], actual - part)
  if actual > 0 and redis.call('HINCRBY', day, 's:' .. r[2], actual) == actual then
    redis.call('EXPIRE', day, 172800)
  end
end
if actual == 0 then return -1 end
if redis.call('HINCRBY', KEYS[3], ARGV[4], actual) == actual then
  redis.call('EXPIRE', KEYS[3], 40 * 86400)
end
local total = redis.call('INCRBY', KEYS[2], actual)
if total == actual then redis.call('EXPIRE', KEYS[2], 40 * 86400) end
return total
"""
