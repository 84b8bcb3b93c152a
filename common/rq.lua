#!lua name=hubsync
-- hubsync's queue, pull budget and bookkeeping (see common/rq.h). The programs
-- load it themselves when Redis has none or an older VERSION; by hand:
-- redis-cli -x FUNCTION LOAD REPLACE < common/rq.lua
-- Every key arrives in KEYS, named by common/keys.c, except a run's own keys:
-- a job names its run in its payload, so they are found from the run key
-- prefix passed in (keys_run with an empty id) as keys.c builds them:
-- <prefix><id>, <prefix><id>:keys, <prefix><id>:settled. Every time is Redis
-- TIME. Scripts are atomic but not transactional: arguments are checked
-- before the first write.

-- Bump with every change: a program loads this library only over an older one.
local VERSION = 12

local function fail(msg)
  error({err = 'ERR hubsync: ' .. msg})
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(v, name)
  local n = tonumber(v)
  if n == nil or n ~= math.floor(n) then fail(name .. ' is not an integer') end
  return n
end

local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end

-- Owner and delivery count of a pending entry, or nil.
local function pending(jobs, group, id)
  local p = redis.call('XPENDING', jobs, group, id, id, 1)
  if #p == 0 then return nil, 0 end
  return p[1][2], tonumber(p[1][4])
end

-- 1 if consumer holds id; else counts a stale settle: 0 gone, -1 held by another.
local function holds(jobs, stats, group, consumer, id)
  local owner = pending(jobs, group, id)
  if owner == consumer then return 1 end
  redis.call('HINCRBY', stats, 'ack_stale', 1)
  if owner then return -1 end
  return 0
end

-- Caller counters are name, delta pairs from args[first]; checked up front.
local function check_counters(args, first)
  for i = first, #args, 2 do
    if not string.match(args[i], '^[a-z0-9_]+$') then fail('bad counter name') end
    int(args[i + 1], 'counter ' .. args[i])
  end
end

-- The payload of stream entry id, or nil.
local function entry_job(jobs, id)
  local e = redis.call('XRANGE', jobs, id, id)[1]
  return e and fields(e[2]).job
end

-- The run named in a job payload (JSON text), or nil.
local function payload_run(job)
  local ok, j = pcall(cjson.decode, job or '')
  if ok and type(j) == 'table' then return j.run end
  return nil
end

-- A run's keys from its id; nil unless the id is one keys.c leaves as it is.
local function run_keys(prefix, id)
  if type(id) ~= 'string' or not string.match(id, '^[A-Za-z0-9._-]+$') then return nil end
  local rec = prefix .. id
  return {id = id, rec = rec, keys = rec .. ':keys', settled = rec .. ':settled',
          entries = rec .. ':entries', entry_of = rec .. ':entry-of'}
end

-- Add delta to what of the sync-file entry job key belongs to in run r, if any.
local function count_entry(r, key, what, delta)
  local entry = key and redis.call('HGET', r.entry_of, key)
  if entry then redis.call('HINCRBY', r.entries, what .. ' ' .. entry, delta) end
end

-- The run a job's end counts in: the one the caller names (the worker read
-- it from the payload), else the payload's, else the current run if its key
-- set holds the key (a payload too broken to name its run).
local function job_run(prefix, current, named, job, key)
  local r = run_keys(prefix, named) or run_keys(prefix, payload_run(job))
  if r then return r end
  r = run_keys(prefix, redis.call('GET', current))
  if r and key and redis.call('SISMEMBER', r.keys, key) == 1 then return r end
  return nil
end

-- Count a job's end in run r while it runs (a finished run's record is
-- final): the caller's counters on every end (work done), and an outcome: a
-- retry counts in its counter (jobs_retried, registry_waits) every time; done,
-- failed or dead once per job key of the run: the first end settles the key,
-- a later one (a duplicate delivery) counts no job.
local function count_work(r, key, args, first)
  for i = first, #args, 2 do
    redis.call('HINCRBY', r.rec, args[i], args[i + 1])
    if args[i] == 'upstream_manifest_gets' then count_entry(r, key, args[i], args[i + 1]) end
  end
end

local function count_end(r, key, outcome, args, first)
  if not r or redis.call('HGET', r.rec, 'state') ~= 'running' then return end
  count_work(r, key, args, first)
  if outcome ~= 'done' and outcome ~= 'failed' and outcome ~= 'dead' then
    redis.call('HINCRBY', r.rec, outcome, 1)
  elseif key and redis.call('SISMEMBER', r.keys, key) == 1
         and redis.call('HSETNX', r.settled, key, outcome) == 1 then
    redis.call('HINCRBY', r.rec, 'jobs_' .. outcome, 1)
    count_entry(r, key, 'jobs_' .. outcome, 1)
    -- When the run's first and latest jobs settled: its phases (coord_run_phases).
    local now = now_ms()
    redis.call('HSETNX', r.rec, 'first_settled_ms', now)
    redis.call('HSET', r.rec, 'last_settled_ms', now)
  end
end

-- The job of key is gone: the key is free again, unless a newer run handed
-- over a job for it while that one was held: this job is enqueued instead.
local function vacate(jobs, index, handover, key)
  local heir = redis.call('HGET', handover, key)
  if heir then
    redis.call('HDEL', handover, key)
    redis.call('HSET', index, key, redis.call('XADD', jobs, '*', 'key', key, 'job', heir))
  else
    redis.call('HDEL', index, key)
  end
end

-- Take entry id off the stream; its key's dedupe entry goes only if it still
-- points at this entry.
local function remove(jobs, group, index, handover, key, id)
  redis.call('XACK', jobs, group, id)
  redis.call('XDEL', jobs, id)
  if key and redis.call('HGET', index, key) == id then vacate(jobs, index, handover, key) end
end

local function bury(jobs, dead, group, index, handover, id, key, job, reason, deliveries, cap)
  redis.call('XADD', dead, 'MAXLEN', '~', cap, '*', 'id', id, 'key', key or '',
             'job', job or '', 'reason', reason, 'deliveries', deliveries, 'ts', now_ms())
  remove(jobs, group, index, handover, key, id)
end

-- Whether the dedupe entry cur of key names a job that still exists (one
-- deleted by hand or lost with part of an AOF does not).
local function alive(jobs, delayed, key, cur)
  if cur == 'delayed' then return redis.call('ZSCORE', delayed, key) ~= false end
  return string.match(cur, '^%d+%-%d+$') ~= nil and #redis.call('XRANGE', jobs, cur, cur) > 0
end

-- The key's dedupe entry if its job exists, else false; a dead one is
-- released so it cannot dedupe the key forever.
local function live_entry(jobs, index, delayed, stats, key)
  local cur = redis.call('HGET', index, key)
  if not cur or alive(jobs, delayed, key, cur) then return cur end
  redis.call('HDEL', index, key)
  redis.call('HINCRBY', stats, 'index_repaired', 1)
  return false
end

-- The run named by the job pending for key (dedupe entry cur), or nil.
local function pending_run(jobs, payload, key, cur)
  if cur ~= 'delayed' then return payload_run(entry_job(jobs, cur)) end
  local ok, p = pcall(cjson.decode, redis.call('HGET', payload, key) or '')
  if ok and type(p) == 'table' and type(p.job) == 'table' then return p.job.run end
  return nil
end

-- The delayed set's bookkeeping, kept as jobs enter and leave it so that no
-- reader (status, sync --wait, an idle worker) parses every payload: a count
-- per why (KEYS ...:count, a hash; nil from a caller older than it, during a
-- rolling update) and, in the record of a running run, jobs_deferred: its
-- jobs waiting for the pull budget. run_prefix nil: no run counts (a purge:
-- the ended run's record keeps how many waited). The counts never go below 0
-- and start afresh whenever the set is empty.
local function payload_why(p)
  return p and string.match(p, '^{"why":"(%a+)"')
end

local function delayed_counts(count, run_prefix, p, delta)
  local why = payload_why(p)
  if not why then return end
  if count and redis.call('HINCRBY', count, why, delta) < 0 then
    redis.call('HSET', count, why, 0)
  end
  if why ~= 'budget' or not run_prefix then return end
  local ok, d = pcall(cjson.decode, p)
  local r = ok and type(d) == 'table' and type(d.job) == 'table'
            and run_keys(run_prefix, d.job.run)
  if r and redis.call('HGET', r.rec, 'state') == 'running'
     and redis.call('HINCRBY', r.rec, 'jobs_deferred', delta) < 0 then
    redis.call('HSET', r.rec, 'jobs_deferred', 0)
  end
end

-- key (payload p, read by the caller) leaves the delayed set.
local function delayed_leave(delayed, payload, count, run_prefix, key, p)
  redis.call('ZREM', delayed, key)
  redis.call('HDEL', payload, key)
  delayed_counts(count, run_prefix, p, -1)
  if count and redis.call('ZCARD', delayed) == 0 then redis.call('DEL', count) end
end

-- key waits in the delayed set until due with payload p.
local function delayed_enter(delayed, payload, count, run_prefix, key, due, p)
  delayed_counts(count, run_prefix, redis.call('HGET', payload, key), -1)
  redis.call('ZADD', delayed, due, key)
  redis.call('HSET', payload, key, p)
  delayed_counts(count, run_prefix, p, 1)
end

local function add(jobs, index, stats, key, job)
  local id = redis.call('XADD', jobs, '*', 'key', key, 'job', job)
  redis.call('HSET', index, key, id)
  redis.call('HINCRBY', stats, 'enqueued', 1)
  return id
end

-- KEYS jobs index stats delayed; ARGV key job -> {1, id} | {0, id or "delayed"}
redis.register_function('hubsync_enqueue', function(keys, args)
  local jobs, index, stats, delayed = keys[1], keys[2], keys[3], keys[4]
  local cur = live_entry(jobs, index, delayed, stats, args[1])
  if cur then
    redis.call('HINCRBY', stats, 'enqueue_dedup', 1)
    return {0, cur}
  end
  return {1, add(jobs, index, stats, args[1], args[2])}
end)

-- KEYS jobs index stats run runkeys settled delayed payload handover count
-- [entries entry_of]; ARGV key job run_id group run_prefix [entry target] -> {1, id}
-- added | {0, id or "delayed"} pending | {2, outcome} settled in this run already (a
-- resumed run enqueues only the rest). The key counts once in the run's jobs_total,
-- and in its sync-file entry's (named entry, landing in target) when it has one. A job left pending by another
-- run (one that ended) is this run's no more: waiting or delayed, this run's
-- job replaces it; held by a worker, this run's job follows it (handover).
redis.register_function('hubsync_run_enqueue', function(keys, args)
  local jobs, index, stats, run = keys[1], keys[2], keys[3], keys[4]
  local runkeys, settled, delayed, payload = keys[5], keys[6], keys[7], keys[8]
  local handover, count = keys[9], keys[10]
  local key, job, id, group, run_prefix = args[1], args[2], args[3], args[4], args[5]
  if redis.call('EXISTS', run) == 0 then fail('no such run') end
  local outcome = redis.call('HGET', settled, key)
  if outcome then return {2, outcome} end
  local entry = keys[11] and args[6] ~= '' and args[6]
  if entry then
    redis.call('HSET', keys[12], key, entry)
    redis.call('HSET', keys[11], 'target ' .. entry, args[7])
  end
  if redis.call('SADD', runkeys, key) == 1 then
    redis.call('HINCRBY', run, 'jobs_total', 1)
    if entry then redis.call('HINCRBY', keys[11], 'jobs_total ' .. entry, 1) end
  end
  local cur = live_entry(jobs, index, delayed, stats, key)
  if not cur then
    redis.call('HDEL', handover, key)
    return {1, add(jobs, index, stats, key, job)}
  end
  if pending_run(jobs, payload, key, cur) == id then
    redis.call('HINCRBY', stats, 'enqueue_dedup', 1)
    return {0, cur}
  end
  if cur == 'delayed' then
    delayed_leave(delayed, payload, count, run_prefix, key, redis.call('HGET', payload, key))
  elseif not pending(jobs, group, cur) then
    redis.call('XDEL', jobs, cur)
  else
    redis.call('HSET', handover, key, job)
    redis.call('HINCRBY', stats, 'handed_over', 1)
    return {0, cur}
  end
  redis.call('HINCRBY', stats, 'taken_over', 1)
  return {1, add(jobs, index, stats, key, job)}
end)
-- KEYS index delayed payload stats count; ARGV run ('' for every run) -> jobs
-- removed. Jobs waiting for the pull budget when a run ends are planned again
-- by the next; the run's record keeps its jobs_deferred.
redis.register_function('hubsync_purge_delayed', function(keys, args)
  local index, delayed, payload, stats, count = keys[1], keys[2], keys[3], keys[4], keys[5]
  local removed = 0
  for _, key in ipairs(redis.call('ZRANGE', delayed, 0, -1)) do
    local p = redis.call('HGET', payload, key)
    local ok, j = pcall(cjson.decode, p or '')
    local run = ok and type(j) == 'table' and type(j.job) == 'table' and j.job.run
    if args[1] == '' or run == args[1] then
      delayed_leave(delayed, payload, count, nil, key, p)
      if redis.call('HGET', index, key) == 'delayed' then redis.call('HDEL', index, key) end
      removed = removed + 1
    end
  end
  if removed > 0 then redis.call('HINCRBY', stats, 'purged', removed) end
  return removed
end)

-- KEYS jobs dead index stats paused current handover workers; ARGV group
-- consumer lease_ms max_deliveries dead_cap run_prefix live_ms -> {'job', id,
-- key, job, deliveries, dead} | {'none', dead} | {'busy', dead} |
-- {'paused'}; dead lists the job keys dead-lettered on the way, each counted
-- in its run (job_run). 'busy': the consumer holds its share of the queue's
-- jobs (held and new, over the live workers: a heartbeat in the last live_ms,
-- itself counted), so the new ones are left to the others; a few large jobs
-- then spread over the fleet instead of going to whoever asked first.
redis.register_function('hubsync_take', function(keys, args)
  local jobs, dead, index, stats, paused = keys[1], keys[2], keys[3], keys[4], keys[5]
  local current, handover, workers = keys[6], keys[7], keys[8]
  local group, consumer, run_prefix = args[1], args[2], args[6]
  local lease, max = int(args[3], 'lease'), int(args[4], 'max_deliveries')
  local cap, live_ms = int(args[5], 'dead_cap'), int(args[7], 'live_ms')
  if lease < 1 or max < 1 then fail('lease and max_deliveries must be positive') end
  if redis.call('EXISTS', paused) == 1 then return {'paused'} end
  local buried = {}
  local function dead_letter(id, f, why, n)
    local r = job_run(run_prefix, current, nil, f.job, f.key)
    bury(jobs, dead, group, index, handover, id, f.key, f.job, why, n, cap)
    redis.call('HINCRBY', stats, 'dead', 1)
    count_end(r, f.key, 'dead', {}, 1)
    table.insert(buried, f.key or id)
  end
  -- Reclaim first: a job idle past its lease lost its worker. The scan is
  -- bounded (100 x 10 pending entries) to keep the script short.
  local cursor = '0-0'
  for _ = 1, 100 do
    local r = redis.call('XAUTOCLAIM', jobs, group, consumer, lease, cursor, 'COUNT', 1)
    cursor = r[1]
    local e = r[2][1]
    if e then
      local f = fields(e[2])
      local _, n = pending(jobs, group, e[1])
      if f.key and f.job and n <= max then
        redis.call('HINCRBY', stats, 'reclaimed', 1)
        return {'job', e[1], f.key, f.job, n, buried}
      end
      dead_letter(e[1], f, (f.key and f.job) and 'max deliveries' or 'malformed entry', n)
    end
    if cursor == '0-0' then break end
  end
  local summary = redis.call('XPENDING', jobs, group)
  local held, mine = summary[1], 0
  for _, c in ipairs(summary[4] or {}) do
    if c[1] == consumer then mine = tonumber(c[2]) end
  end
  local new = redis.call('XLEN', jobs) - held
  if mine > 0 and new > 0 then
    local now = now_ms()
    local live = redis.call('ZCOUNT', workers, now - live_ms, '+inf')
    local beat = redis.call('ZSCORE', workers, consumer)
    if not beat or tonumber(beat) < now - live_ms then live = live + 1 end
    if mine >= math.ceil((held + new) / live) then return {'busy', buried} end
  end
  for _ = 1, 100 do
    local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
                         'STREAMS', jobs, '>')
    if not r then break end
    local e = r[1][2][1]
    local f = fields(e[2])
    if f.key and f.job then return {'job', e[1], f.key, f.job, 1, buried} end
    dead_letter(e[1], f, 'malformed entry', 1)
  end
  return {'none', buried}
end)

-- KEYS jobs count current; ARGV run_prefix -> {'queued', n, 'waiting', n,
-- 'run', state}: the stream's length (held jobs included), the delayed jobs
-- that wait for anything but the pull budget (the delayed set's counts per
-- why), and the current run: 'none', 'filling' (its jobs are being enqueued)
-- or 'enqueued'. What a worker that leaves once the queue is drained looks at.
redis.register_function{function_name = 'hubsync_idle', flags = {'no-writes'},
                        callback = function(keys, args)
  local waiting = 0
  for why, n in pairs(fields(redis.call('HGETALL', keys[2]))) do
    if why ~= 'budget' then waiting = waiting + (tonumber(n) or 0) end
  end
  local run, r = 'none', run_keys(args[1], redis.call('GET', keys[3]))
  if r and redis.call('EXISTS', r.rec) == 1 then
    run = redis.call('HGET', r.rec, 'enqueued') == '1' and 'enqueued' or 'filling'
  end
  return {'queued', tostring(redis.call('XLEN', keys[1])), 'waiting', tostring(waiting),
          'run', run}
end}

-- KEYS jobs; ARGV group consumer id -> 1 held (lease renewed) | 0 gone | -1 other
redis.register_function('hubsync_renew', function(keys, args)
  local owner = pending(keys[1], args[1], args[3])
  if not owner then return 0 end
  if owner ~= args[2] then return -1 end
  redis.call('XCLAIM', keys[1], args[1], args[2], 0, args[3], 'JUSTID')
  return 1
end)

-- Settling a held job (ack, retry, fail) -> 1 | 0 gone | -1 held by another.
-- KEYS jobs index stats current handover, then the function's own; ARGV group
-- consumer id key run_prefix run ('' when the caller cannot tell: job_run
-- finds it), then the function's own.

-- ack: ARGV ... [counter delta]...
redis.register_function('hubsync_ack', function(keys, args)
  local jobs, index, stats, current, handover = keys[1], keys[2], keys[3], keys[4], keys[5]
  local group, consumer, id, key = args[1], args[2], args[3], args[4]
  check_counters(args, 7)
  local held = holds(jobs, stats, group, consumer, id)
  if held ~= 1 then return held end
  local r = job_run(args[5], current, args[6], entry_job(jobs, id), key)
  remove(jobs, group, index, handover, key, id)
  redis.call('HINCRBY', stats, 'done', 1)
  count_end(r, key, 'done', args, 7)
  return 1
end)

-- retry: KEYS ... delayed payload count; ARGV ... job delay_ms why [counter
-- delta]... A job waiting for a registry counts in the run's registry_waits,
-- any other retry in its jobs_retried; one waiting for the pull budget in its
-- jobs_deferred too, until it leaves the delayed set. Why 'spent' puts it
-- straight back into the stream, delay_ms unused (a worker whose pull budget
-- is spent leaves it to one whose is not).
redis.register_function('hubsync_retry', function(keys, args)
  local jobs, index, stats, current, handover = keys[1], keys[2], keys[3], keys[4], keys[5]
  local delayed, payload, count = keys[6], keys[7], keys[8]
  local group, consumer, id, key = args[1], args[2], args[3], args[4]
  local job, why = args[7], args[9]
  local delay = int(args[8], 'delay_ms')
  if delay < 0 then fail('delay_ms must not be negative') end
  if why ~= 'backoff' and why ~= 'budget' and why ~= 'registry' and why ~= 'spent' then
    fail('why must be backoff, budget, registry or spent')
  end
  check_counters(args, 10)
  local held = holds(jobs, stats, group, consumer, id)
  if held ~= 1 then return held end
  local r = job_run(args[5], current, args[6], entry_job(jobs, id), key)
  local cur = redis.call('HGET', index, key)
  local heir = cur == id and redis.call('HGET', handover, key)
  remove(jobs, group, index, handover, key, id)
  if (cur and cur ~= id) or heir then
    -- A newer job for this key is pending; it supersedes this one.
    redis.call('HINCRBY', stats, 'retry_superseded', 1)
  elseif why == 'spent' then
    redis.call('HSET', index, key, redis.call('XADD', jobs, '*', 'key', key, 'job', job))
    redis.call('HINCRBY', stats, 'requeued_spent', 1)
  else
    local due = now_ms() + delay
    delayed_enter(delayed, payload, count, args[5], key, due,
                  string.format('{"why":"%s","due_ms":%d,"job":%s}', why, due, job))
    redis.call('HSET', index, key, 'delayed')
    redis.call('HINCRBY', stats, 'retried_' .. why, 1)
  end
  count_end(r, key, why == 'registry' and 'registry_waits' or 'jobs_retried', args, 10)
  return 1
end)

-- fail: KEYS ... dead; ARGV ... reason dead_cap [counter delta]...
redis.register_function('hubsync_fail', function(keys, args)
  local jobs, index, stats, current, handover = keys[1], keys[2], keys[3], keys[4], keys[5]
  local dead = keys[6]
  local group, consumer, id, key, reason = args[1], args[2], args[3], args[4], args[7]
  local cap = int(args[8], 'dead_cap')
  check_counters(args, 9)
  local held = holds(jobs, stats, group, consumer, id)
  if held ~= 1 then return held end
  local _, n = pending(jobs, group, id)
  local job = entry_job(jobs, id)
  local r = job_run(args[5], current, args[6], job, key)
  bury(jobs, dead, group, index, handover, id, key, job, reason, n, cap)
  redis.call('HINCRBY', stats, 'failed', 1)
  count_end(r, key, 'failed', args, 9)
  return 1
end)

-- KEYS jobs stats; ARGV group consumer id lease_ms. The entry becomes idle
-- for a full lease (reclaimable at once) with its delivery count put back.
redis.register_function('hubsync_handback', function(keys, args)
  local jobs, stats = keys[1], keys[2]
  local group, consumer, id = args[1], args[2], args[3]
  local lease = int(args[4], 'lease_ms')
  local owner, n = pending(jobs, group, id)
  if owner ~= consumer then return owner and -1 or 0 end
  redis.call('XCLAIM', jobs, group, consumer, 0, id, 'IDLE', lease,
             'RETRYCOUNT', math.max(n - 1, 0), 'JUSTID')
  redis.call('HINCRBY', stats, 'handback', 1)
  return 1
end)

-- KEYS jobs index delayed payload stats count; ARGV max run_prefix -> jobs
-- moved back
redis.register_function('hubsync_promote', function(keys, args)
  local jobs, index, delayed, payload, stats = keys[1], keys[2], keys[3], keys[4], keys[5]
  local count, run_prefix = keys[6], args[2]
  local max = int(args[1], 'max')
  local due = redis.call('ZRANGE', delayed, '-inf', now_ms(), 'BYSCORE', 'LIMIT', 0, max)
  local moved = 0
  for _, key in ipairs(due) do
    local p = redis.call('HGET', payload, key)
    local at = p and string.find(p, ',"job":', 1, true)
    delayed_leave(delayed, payload, count, run_prefix, key, p)
    if at then
      local id = redis.call('XADD', jobs, '*', 'key', key, 'job', string.sub(p, at + 7, -2))
      redis.call('HSET', index, key, id)
      moved = moved + 1
    else
      if redis.call('HGET', index, key) == 'delayed' then redis.call('HDEL', index, key) end
      redis.call('HINCRBY', stats, 'promote_lost', 1)
    end
  end
  if moved > 0 then redis.call('HINCRBY', stats, 'promoted', moved) end
  return moved
end)

-- What budget hash b (its fields) and its reservations allow now: 'paused',
-- 'unknown' (never seen, or seen longer ago than Hub's window: only a probe
-- can tell), 'unlimited', else 'limited' with the pulls available.
local function budget_state(b, inflight, now)
  if (tonumber(b.paused_until_ms) or 0) > now then return 'paused', 0 end
  local observed = tonumber(b.observed_ms)
  local window = (tonumber(b.window_s) or 0) * 1000
  if not observed or (window > 0 and now - observed > window) then return 'unknown', 0 end
  if b.unlimited == '1' then return 'unlimited', 0 end
  return 'limited', (tonumber(b.remaining) or 0) - redis.call('ZCARD', inflight)
end

-- KEYS budget inflight stats worker_budgets [budget inflight]...; ARGV cost
-- floor ttl_ms reservation worker -> {'granted', remaining, i} | {'unlimited',
-- 0, i} | {'denied', wait_ms, 0} | {'busy', wait_ms, 0} | {'unknown', 0, i}.
-- 'busy': spent only counting the pulls reserved and not yet settled. Hub
-- counts a GET when it arrives, so an answer observed before that GET's own
-- may already count it while its reservation is still held: the budget is
-- not known to be spent until they settle (ask again soon; wait_ms is the
-- wait should it be spent then). Several budget and
-- inflight pairs are the accounts of one registry (the first pair is i = 1,
-- the others follow worker_budgets): an unknown one is probed first (i), else
-- the one with the most pulls left is reserved from, so accounts drain
-- evenly; denied only when every one is spent or paused, with the shortest
-- wait. The worker asking ('' none) pulls from the chosen budget from now on
-- (worker_budgets).
redis.register_function('hubsync_budget_acquire', function(keys, args)
  local stats, worker_budgets = keys[3], keys[4]
  local cost, floor = int(args[1], 'cost'), int(args[2], 'floor')
  local ttl = int(args[3], 'ttl_ms')
  local resv = args[4]
  if cost < 1 or cost > 100 then fail('cost must be 1..100') end
  if ttl < 1 then fail('ttl_ms must be positive') end
  if #keys % 2 ~= 0 then fail('budget and inflight keys come in pairs') end
  local accts = {{keys[1], keys[2]}}
  for k = 5, #keys, 2 do accts[#accts + 1] = {keys[k], keys[k + 1]} end
  local now = now_ms()
  local best, best_avail, wait, busy = nil, nil, nil, false
  for i, p in ipairs(accts) do
    local budget, inflight = p[1], p[2]
    redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
    local b = fields(redis.call('HGETALL', budget))
    local state, avail = budget_state(b, inflight, now)
    local w = nil
    if state == 'unknown' or state == 'unlimited' then
      if args[5] ~= '' then redis.call('HSET', worker_budgets, args[5], budget) end
      if state == 'unknown' then return {'unknown', 0, i} end
      redis.call('HINCRBY', stats, 'pulls_granted', cost)
      return {'unlimited', 0, i}
    elseif state == 'paused' then
      w = tonumber(b.paused_until_ms) - now
    elseif avail - cost >= floor then
      if not best or avail > best_avail then best, best_avail = i, avail end
    else
      if (tonumber(b.remaining) or 0) - cost >= floor then busy = true end
      -- Hub's window is rolling: a pull comes back every window/limit ms.
      local limit, window = tonumber(b.limit) or 0, (tonumber(b.window_s) or 0) * 1000
      w = 60000
      if limit > 0 and window > 0 then
        w = math.min(window, math.ceil(window / limit) * (floor + cost - avail))
      end
    end
    if w and (not wait or w < wait) then wait = w end
  end
  local chosen = accts[best or 1]
  if args[5] ~= '' then redis.call('HSET', worker_budgets, args[5], chosen[1]) end
  if not best then
    if busy then return {'busy', wait, 0} end
    redis.call('HINCRBY', stats, 'pulls_denied', 1)
    return {'denied', wait, 0}
  end
  local inflight, expiry = chosen[2], now + ttl
  redis.call('ZADD', inflight, expiry, resv)
  for i = 2, cost do redis.call('ZADD', inflight, expiry, resv .. '#' .. i) end
  if redis.call('PTTL', inflight) < ttl then redis.call('PEXPIRE', inflight, ttl) end
  redis.call('HINCRBY', stats, 'pulls_granted', cost)
  return {'granted', best_avail - cost, best}
end)

-- A source not heard from for a week (an address that changed) is forgotten;
-- an unknown budget is probed again with a free HEAD.
local BUDGET_KEEP_MS = 7 * 86400000

-- The sources heard from, for readers (KEYS budgets: source -> last heard,
-- ms), as long as their hashes live. nil from a caller older than it.
local function budget_heard(budgets, source, now)
  if not budgets or not source or source == '' then return end
  redis.call('ZADD', budgets, now, source)
  redis.call('ZREMRANGEBYSCORE', budgets, '-inf', now - BUDGET_KEEP_MS)
end

local function unreserve(inflight, resv)
  if resv == '' then return end
  if redis.call('ZREM', inflight, resv) == 0 then return end
  local i = 2
  while redis.call('ZREM', inflight, resv .. '#' .. i) == 1 do i = i + 1 end
end

-- KEYS budget inflight budgets; ARGV mode limit remaining window_s reservation
-- source.
-- mode 'limited' applies Hub's numbers, 'unlimited' (the response had no
-- ratelimit headers) marks the source not limited, 'none' (unusable headers)
-- only releases the reservation. -> remaining | -1 unlimited | -2 nothing
redis.register_function('hubsync_budget_observe', function(keys, args)
  local budget, inflight, mode, resv = keys[1], keys[2], args[1], args[5]
  local now = now_ms()
  if mode == 'none' then
    unreserve(inflight, resv)
    return -2
  end
  if mode == 'unlimited' then
    unreserve(inflight, resv)
    redis.call('HSET', budget, 'unlimited', 1, 'observed_ms', now)
    redis.call('PEXPIRE', budget, BUDGET_KEEP_MS)
    budget_heard(keys[3], args[6], now)
    return -1
  end
  if mode ~= 'limited' then fail('mode must be limited, unlimited or none') end
  local limit, remaining = int(args[2], 'limit'), int(args[3], 'remaining')
  local window = int(args[4], 'window_s')
  unreserve(inflight, resv)
  local prev_r = tonumber(redis.call('HGET', budget, 'remaining'))
  -- Answers arrive in any order, so while GETs are being answered a higher count
  -- than the stored one may be older than it: the budget only goes down then.
  -- Once no GET was answered for a few seconds every answer is current, and a
  -- higher count means Hub's window moved on.
  if prev_r and remaining > prev_r then
    local last_get = tonumber(redis.call('HGET', budget, 'get_ms')) or 0
    if now - last_get < 3000 then remaining = prev_r end
  end
  if resv ~= '' then redis.call('HSET', budget, 'get_ms', now) end
  redis.call('HSET', budget, 'limit', limit, 'remaining', remaining, 'window_s', window,
             'observed_ms', now, 'unlimited', 0)
  redis.call('PEXPIRE', budget, BUDGET_KEEP_MS)
  budget_heard(keys[3], args[6], now)
  return remaining
end)
-- KEYS workers worker_budgets budget; ARGV id floor live_ms -> 1 if a worker
-- other than id, alive (a heartbeat in the last live_ms), may pull from a
-- budget other than this one now: it has not asked for a pull yet, or its
-- budget is unknown, unlimited or above floor. Else 0. A worker whose own
-- source is spent hands its job to such a worker rather than defer it. The
-- other budgets and their reservations (<budget>:inflight, as keys.c names
-- them) are values of worker_budgets, not in KEYS.
redis.register_function{function_name = 'hubsync_budget_elsewhere', flags = {'no-writes'},
                        callback = function(keys, args)
  local workers, worker_budgets, mine = keys[1], keys[2], keys[3]
  local floor, live = int(args[2], 'floor'), int(args[3], 'live_ms')
  local now = now_ms()
  for _, id in ipairs(redis.call('ZRANGE', workers, now - live, '+inf', 'BYSCORE')) do
    if id ~= args[1] then
      local other = redis.call('HGET', worker_budgets, id)
      if not other then return 1 end
      if other ~= mine then
        local state, avail = budget_state(fields(redis.call('HGETALL', other)),
                                          other .. ':inflight', now)
        if state ~= 'paused' and (state ~= 'limited' or avail > floor) then return 1 end
      end
    end
  end
  return 0
end}

-- KEYS budget stats budgets; ARGV duration_ms source -> pause in force (ms). After a 429
-- no worker pulls until the pause ends and a probe shows budget.
redis.register_function('hubsync_budget_pause', function(keys, args)
  local budget, stats = keys[1], keys[2]
  local now = now_ms()
  local untl = now + int(args[1], 'duration_ms')
  local cur = tonumber(redis.call('HGET', budget, 'paused_until_ms')) or 0
  if cur > untl then untl = cur end
  redis.call('HSET', budget, 'paused_until_ms', untl, 'remaining', 0, 'unlimited', 0)
  redis.call('HINCRBY', budget, 'http_429', 1)
  redis.call('PEXPIRE', budget, BUDGET_KEEP_MS)
  budget_heard(keys[3], args[2], now)
  redis.call('HINCRBY', stats, 'http_429', 1)
  return untl - now
end)

-- Circuit breakers, one hash per registry (upstream or target). A registry that
-- fails `threshold` reports in a row (no answer, or 5xx) is left alone for a
-- cool-down: jobs needing it wait instead of failing against it. Then one caller
-- probes it; any answer closes the breaker. Fields: state (closed, open,
-- half_open), failures (in a row), until_ms (open: end of the cool-down;
-- half_open: end of the probe), opened_ms, probes, registry, error, failed_ms.

-- KEYS breaker...; ARGV probe_ms -> {'granted', 0} | {'denied', wait_ms} |
-- {'unknown', i}: probe the registry of KEYS[i] first; the probe is this
-- caller's for probe_ms.
redis.register_function('hubsync_breaker_check', function(keys, args)
  local probe = int(args[1], 'probe_ms')
  if probe < 1 then fail('probe_ms must be positive') end
  local now = now_ms()
  local wait, due = 0, nil
  for i, key in ipairs(keys) do
    local b = redis.call('HMGET', key, 'state', 'until_ms')
    local untl = tonumber(b[2]) or 0
    if b[1] == 'open' or b[1] == 'half_open' then
      if untl <= now then
        due = due or i
      elseif b[1] == 'open' then
        wait = math.max(wait, untl - now)
      else
        wait = math.max(wait, math.min(untl - now, 1000)) -- a probe's answer is near
      end
    end
  end
  if wait > 0 then return {'denied', wait} end
  if due then
    redis.call('HSET', keys[due], 'state', 'half_open', 'until_ms', now + probe)
    redis.call('HINCRBY', keys[due], 'probes', 1)
    return {'unknown', due}
  end
  return {'granted', 0}
end)

-- KEYS breaker stats; ARGV ok threshold cooldown_ms registry error -> 'open' or
-- 'closed' when this report changed the state, else nil. ok 1: the registry
-- answered; 0: it did not, or with 5xx (error says how).
redis.register_function('hubsync_breaker_report', function(keys, args)
  local key, stats = keys[1], keys[2]
  local ok = args[1]
  local threshold, cooldown = int(args[2], 'threshold'), int(args[3], 'cooldown_ms')
  if ok ~= '0' and ok ~= '1' then fail('ok must be 0 or 1') end
  if threshold < 1 or cooldown < 0 then
    fail('threshold must be positive, cooldown_ms not negative')
  end
  local b = redis.call('HMGET', key, 'state', 'failures')
  local state = b[1] or 'closed'
  if ok == '1' then
    if state == 'closed' and (tonumber(b[2]) or 0) == 0 then return false end
    redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'until_ms', 0)
    if state == 'closed' then return false end
    redis.call('HINCRBY', stats, 'breaker_closed', 1)
    return 'closed'
  end
  local now = now_ms()
  local failures = redis.call('HINCRBY', key, 'failures', 1)
  redis.call('HSET', key, 'state', state, 'registry', args[4], 'error', args[5],
             'failed_ms', now)
  -- A failed probe opens it again at once.
  if state == 'half_open' or (state == 'closed' and failures >= threshold) then
    if state == 'closed' then redis.call('HSET', key, 'opened_ms', now) end
    redis.call('HSET', key, 'state', 'open', 'until_ms', now + cooldown)
    redis.call('HINCRBY', stats, 'breaker_opened', 1)
    return 'open'
  end
  return false
end)

-- Present sets, blobhome and the target record live ttl_ms after their last
-- use: those of an old epoch or of a gone target expire by themselves.

-- KEYS present; ARGV ttl_ms digest... -> {1|0 per digest}
redis.register_function('hubsync_present_check', function(keys, args)
  local ttl = int(args[1], 'ttl_ms')
  local flags = {}
  for i = 2, #args do flags[i - 1] = redis.call('SISMEMBER', keys[1], args[i]) end
  redis.call('PEXPIRE', keys[1], ttl)
  return flags
end)

-- KEYS present blobhome; ARGV ttl_ms repo digest... -> digests newly added
redis.register_function('hubsync_present_mark', function(keys, args)
  local ttl = int(args[1], 'ttl_ms')
  local added = 0
  for i = 3, #args do
    added = added + redis.call('SADD', keys[1], args[i])
    redis.call('HSET', keys[2], args[i], args[2])
  end
  if #args > 2 then
    redis.call('PEXPIRE', keys[1], ttl)
    redis.call('PEXPIRE', keys[2], ttl)
  end
  return added
end)

-- KEYS present blobhome; ARGV repo digest... -> digests removed
redis.register_function('hubsync_present_forget', function(keys, args)
  local removed = 0
  for i = 2, #args do
    removed = removed + redis.call('SREM', keys[1], args[i])
    if redis.call('HGET', keys[2], args[i]) == args[1] then
      redis.call('HDEL', keys[2], args[i])
    end
  end
  return removed
end)

-- KEYS target; ARGV old marker repo ttl_ms -> the record (field, value, ...).
-- marker becomes the target's epoch only while the record still names old
-- ('' for none): of two workers that found the old marker gone, the first
-- one's new marker stands. old = marker only renews the record.
redis.register_function('hubsync_target_epoch', function(keys, args)
  local old, marker, repo = args[1], args[2], args[3]
  local ttl = int(args[4], 'ttl_ms')
  if not string.match(marker, '^sha256:[0-9a-f]+$') then fail('marker is not a digest') end
  local cur = redis.call('HGET', keys[1], 'marker') or ''
  if cur == old and cur ~= marker then
    redis.call('HSET', keys[1], 'marker', marker, 'epoch', string.sub(marker, 8, 19),
               'repo', repo, 'since_ms', now_ms())
  end
  redis.call('PEXPIRE', keys[1], ttl)
  return redis.call('HGETALL', keys[1])
end)

-- KEYS manifest manifests; ARGV type body ttl_ms max_bytes -> 1.
-- The kept manifests are a log of bytes: manifests scores each manifest key by
-- the log's length once it was added (the top score is the length), and a keep
-- deletes those more than max_bytes back. What is kept thus stays under
-- max_bytes plus one body, whatever expired or was dropped meanwhile. (The
-- keys deleted are not in KEYS: they are members of manifests.)
redis.register_function('hubsync_manifest_keep', function(keys, args)
  local manifest, manifests = keys[1], keys[2]
  local ttl, max = int(args[3], 'ttl_ms'), int(args[4], 'max_bytes')
  if ttl < 1 or max < 1 then fail('ttl_ms and max_bytes must be positive') end
  local top = redis.call('ZRANGE', manifests, -1, -1, 'WITHSCORES')
  local length = (tonumber(top[2]) or 0) + #args[2]
  redis.call('HSET', manifest, 'type', args[1], 'body', args[2])
  redis.call('PEXPIRE', manifest, ttl)
  redis.call('ZADD', manifests, length, manifest)
  local old = redis.call('ZRANGE', manifests, '-inf', length - max, 'BYSCORE')
  for _, key in ipairs(old) do redis.call('DEL', key) end
  redis.call('ZREMRANGEBYSCORE', manifests, '-inf', length - max)
  redis.call('PEXPIRE', manifests, ttl)
  return 1
end)

-- KEYS manifest manifests -> 1
redis.register_function('hubsync_manifest_drop', function(keys, args)
  redis.call('DEL', keys[1])
  redis.call('ZREM', keys[2], keys[1])
  return 1
end)

-- A tag's event survives its worker being killed between the tag's PUT and the
-- event: the event is recorded in pending (field -> "<digest> <type> <data>")
-- before the PUT, appended and dropped in one step after it, and a worker
-- finding the tag already right appends what its record says the dead one wrote.
local function event_append(events, keep, etype, data)
  redis.call('XADD', events, 'MAXLEN', '~', keep, '*', 'type', etype, 'data', data)
end

-- KEYS events pending; ARGV keep field type data -> 1
redis.register_function('hubsync_event_tag', function(keys, args)
  local keep = int(args[1], 'keep')
  event_append(keys[1], keep, args[3], args[4])
  redis.call('HDEL', keys[2], args[2])
  return 1
end)

-- KEYS events pending; ARGV keep (field digest)... -> events appended. Each field's
-- tag is at digest on the target: a record of a PUT of that digest landed
-- without its event; any other record is stale. Every record named is dropped.
redis.register_function('hubsync_event_settle', function(keys, args)
  local keep = int(args[1], 'keep')
  if #args % 2 ~= 1 then fail('event_settle wants field, digest pairs') end
  if redis.call('HLEN', keys[2]) == 0 then return 0 end
  local n = 0
  for i = 2, #args, 2 do
    local v = redis.call('HGET', keys[2], args[i])
    if v then
      local digest, etype, data = string.match(v, '^(%S+) (%S+) (.*)$')
      if digest == args[i + 1] then
        event_append(keys[1], keep, etype, data)
        n = n + 1
      end
      redis.call('HDEL', keys[2], args[i])
    end
  end
  return n
end)

-- KEYS lease; ARGV token ttl_ms -> 1 renewed | 0 not held
redis.register_function('hubsync_lease_renew', function(keys, args)
  local ttl = int(args[2], 'ttl_ms')
  if redis.call('GET', keys[1]) ~= args[1] then return 0 end
  redis.call('PEXPIRE', keys[1], ttl)
  return 1
end)

-- KEYS lease; ARGV token -> 1 released | 0 not held
redis.register_function('hubsync_lease_release', function(keys, args)
  if redis.call('GET', keys[1]) ~= args[1] then return 0 end
  redis.call('DEL', keys[1])
  return 1
end)

-- KEYS run runs current; ARGV id commit run_prefix keep -> start ms | 0 if the
-- run exists. Only the newest `keep` runs keep their records: older ones (all
-- finished: a run is created only when none is current) are dropped.
redis.register_function('hubsync_run_create', function(keys, args)
  local run, runs, current = keys[1], keys[2], keys[3]
  local keep = int(args[4], 'keep')
  if keep < 1 then fail('keep must be positive') end
  if redis.call('EXISTS', run) == 1 then return 0 end
  local now = now_ms()
  redis.call('HSET', run, 'id', args[1], 'state', 'running', 'commit', args[2],
             'started_ms', now, 'jobs_total', 0, 'jobs_done', 0, 'jobs_failed', 0,
             'jobs_retried', 0, 'jobs_dead', 0)
  redis.call('ZADD', runs, now, args[1])
  redis.call('SET', current, args[1])
  for _, old in ipairs(redis.call('ZRANGE', runs, 0, -keep - 1)) do
    local r = run_keys(args[3], old)
    if r then redis.call('DEL', r.rec, r.keys, r.settled, r.entries, r.entry_of) end
    redis.call('ZREM', runs, old)
  end
  return now
end)

-- KEYS run current synced runkeys settled handover [entry_of]; ARGV id state advance -> 1
-- | 0 no such run. advance=1 with state done moves the synced marker to the
-- run's commit. The run's key and settled sets only serve a resumed run, and
-- its handed-over jobs only its own count: a finished run drops them.
redis.register_function('hubsync_run_finish', function(keys, args)
  local run, current, synced, runkeys = keys[1], keys[2], keys[3], keys[4]
  local settled, handover = keys[5], keys[6]
  local id, state = args[1], args[2]
  if state ~= 'done' and state ~= 'deferred' and state ~= 'failed'
     and state ~= 'aborted' then
    fail('state must be done, deferred, failed or aborted')
  end
  if redis.call('EXISTS', run) == 0 then return 0 end
  redis.call('HSET', run, 'state', state, 'finished_ms', now_ms())
  redis.call('DEL', runkeys, settled)
  if keys[7] then redis.call('DEL', keys[7]) end
  local h = redis.call('HGETALL', handover)
  for i = 1, #h, 2 do
    if payload_run(h[i + 1]) == id then redis.call('HDEL', handover, h[i]) end
  end
  if redis.call('GET', current) == id then redis.call('DEL', current) end
  if args[3] == '1' and state == 'done' then
    redis.call('SET', synced, redis.call('HGET', run, 'commit'))
  end
  return 1
end)

-- KEYS runkeys settled jobs index delayed payload handover; ARGV run_id cursor
-- count -> {next cursor, lost}: of about count keys of the run from cursor
-- ("0" to start), those not settled that have no job of this run queued,
-- held, delayed or handed over: nothing would ever settle them.
redis.register_function{function_name = 'hubsync_run_check', flags = {'no-writes'},
                        callback = function(keys, args)
  local runkeys, settled, jobs, index = keys[1], keys[2], keys[3], keys[4]
  local delayed, payload, handover = keys[5], keys[6], keys[7]
  local id = args[1]
  local r = redis.call('SSCAN', runkeys, args[2], 'COUNT', int(args[3], 'count'))
  local lost = {}
  for _, key in ipairs(r[2]) do
    if redis.call('HEXISTS', settled, key) == 0 then
      local cur = redis.call('HGET', index, key)
      local queued = cur and alive(jobs, delayed, key, cur)
                     and (pending_run(jobs, payload, key, cur) == id
                          or payload_run(redis.call('HGET', handover, key)) == id)
      if not queued then table.insert(lost, key) end
    end
  end
  return {r[1], lost}
end}

-- Assists: a job's owner offers windows of its index's children (XADD to the
-- assist stream, rq_cmd_assist_offer); an idle worker takes one, copies them
-- under their copy locks and adds its counters to the job's run.

-- KEYS assist; ARGV consumer -> {id, field, value...} of the oldest offer of
-- another worker's job, removed as it is taken | 'none'
redis.register_function('hubsync_assist_take', function(keys, args)
  local from = '-'
  while true do
    local batch = redis.call('XRANGE', keys[1], from, '+', 'COUNT', 100)
    for _, e in ipairs(batch) do
      local f = fields(e[2])
      if f.worker ~= args[1] then
        redis.call('XDEL', keys[1], e[1])
        local out = {e[1]}
        for _, v in ipairs(e[2]) do table.insert(out, v) end
        return out
      end
    end
    if #batch < 100 then return 'none' end
    from = '(' .. batch[#batch][1]
  end
end)

-- KEYS current; ARGV run_prefix run key [counter delta]... -> 1 counted | 0 (the
-- run is over or unknown). What an assistant did counts in the run as a job's
-- work does (count_end without an outcome).
redis.register_function('hubsync_assist_done', function(keys, args)
  check_counters(args, 4)
  local r = job_run(args[1], keys[1], args[2], nil, args[3])
  if not r or redis.call('HGET', r.rec, 'state') ~= 'running' then return 0 end
  count_work(r, args[3], args, 4)
  return 1
end)

-- KEYS assist; ARGV job worker -> offers dropped: those the worker made of the job
-- left untaken when it ends, whatever the outcome (a worker that took the job over
-- keeps its own).
redis.register_function('hubsync_assist_clear', function(keys, args)
  local n = 0
  for _, e in ipairs(redis.call('XRANGE', keys[1], '-', '+')) do
    local f = fields(e[2])
    if f.job == args[1] and f.worker == args[2] then
      n = n + redis.call('XDEL', keys[1], e[1])
    end
  end
  return n
end)

-- -> the library's VERSION (a program loads its own only over an older one).
redis.register_function{function_name = 'hubsync_version', flags = {'no-writes'},
                        callback = function() return VERSION end}

-- KEYS worker workers worker_budgets; ARGV id json ttl_s. Workers silent for
-- a day are dropped.
redis.register_function('hubsync_worker_beat', function(keys, args)
  local workers, worker_budgets = keys[2], keys[3]
  local ttl = int(args[3], 'ttl_s')
  local now = now_ms()
  redis.call('SET', keys[1], args[2], 'EX', ttl)
  redis.call('ZADD', workers, now, args[1])
  for _, old in ipairs(redis.call('ZRANGE', workers, '-inf', now - 86400000, 'BYSCORE')) do
    redis.call('HDEL', worker_budgets, old)
  end
  redis.call('ZREMRANGEBYSCORE', workers, '-inf', now - 86400000)
  return 1
end)

-- KEYS worker workers worker_budgets; ARGV id
redis.register_function('hubsync_worker_gone', function(keys, args)
  redis.call('DEL', keys[1])
  redis.call('ZREM', keys[2], args[1])
  redis.call('HDEL', keys[3], args[1])
  return 1
end)

-- KEYS jobs; ARGV group min_idle_ms -> consumers deleted. Only consumers
-- with nothing pending go (DELCONSUMER would drop pending entries); a live
-- one deleted this way is simply created again by its next read.
redis.register_function('hubsync_prune_consumers', function(keys, args)
  local min_idle = int(args[2], 'min_idle_ms')
  local n = 0
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', keys[1], args[1])) do
    local f = fields(c)
    if tonumber(f.pending) == 0 and tonumber(f.idle) >= min_idle then
      redis.call('XGROUP', 'DELCONSUMER', keys[1], args[1], f.name)
      n = n + 1
    end
  end
  return n
end)

-- KEYS index jobs delayed stats handover; ARGV cursor count -> {next cursor,
-- released}. Releases dedupe entries whose job is gone (an entry deleted by
-- hand, a partly lost AOF): such a key would otherwise wait for enqueue to
-- find it dead. A job handed over for the key is enqueued in its place.
redis.register_function('hubsync_repair_index', function(keys, args)
  local index, jobs, delayed, stats = keys[1], keys[2], keys[3], keys[4]
  local handover = keys[5]
  local r = redis.call('HSCAN', index, args[1], 'COUNT', int(args[2], 'count'))
  local released = 0
  for i = 1, #r[2], 2 do
    local key, v = r[2][i], r[2][i + 1]
    if not alive(jobs, delayed, key, v) then
      vacate(jobs, index, handover, key)
      released = released + 1
    end
  end
  if released > 0 then redis.call('HINCRBY', stats, 'index_repaired', released) end
  return {r[1], released}
end)

-- KEYS new; ARGV first digest... Digests of an export in progress: the set
-- starts anew with first = 1 and lives a day unless recorded.
redis.register_function('hubsync_export_add', function(keys, args)
  if args[1] == '1' then redis.call('DEL', keys[1]) end
  for i = 2, #args, 5000 do
    redis.call('SADD', keys[1], unpack(args, i, math.min(i + 4999, #args)))
  end
  redis.call('PEXPIRE', keys[1], 86400000)
  return 1
end)

-- KEYS new set exports; ARGV commit set_prefix keep. The export at commit is
-- complete: its set replaces any older one of the commit, the commit is the
-- newest export, and only the newest keep exports stay, with their sets.
redis.register_function('hubsync_export_record', function(keys, args)
  local keep = int(args[3], 'keep')
  if keep < 1 then fail('keep must be >= 1') end
  redis.call('DEL', keys[2])
  if redis.call('EXISTS', keys[1]) == 1 then
    redis.call('RENAME', keys[1], keys[2])
    redis.call('PERSIST', keys[2])
  end
  redis.call('ZADD', keys[3], now_ms(), args[1])
  for _, old in ipairs(redis.call('ZRANGE', keys[3], 0, -keep - 1)) do
    redis.call('DEL', args[2] .. old)
    redis.call('ZREM', keys[3], old)
  end
  return 1
end)

-- KEYS site; ARGV commit base: an import brought the site (a target
-- registry) from base ('' for a full bundle) to commit.
redis.register_function('hubsync_site_record', function(keys, args)
  redis.call('HSET', keys[1], 'commit', args[1], 'base', args[2], 'imported_ms', now_ms())
  return 1
end)
