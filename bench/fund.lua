-- wrk script: a funding as the clients carry it out, maker -> checker (four eyes): POST
-- /groups/<id>/funding with the maker's token, and when it answers 202 pending, POST
-- /approvals/<request id>/grant with the checker's (another ministry admin) as the thread's next
-- request. Over a list of approved groups, each funding a group of its own until the list is
-- used up, then the next tranche of each (a whole list of requests later: long answered and
-- granted). A funding carried out at once (no four eyes) needs no grant.
-- args: <file of group ids> <first request index> <maker token> <threads> <run id> <date>
--       <checker token>
local ids = {}
local offset, token, threads, run_id, day, checker = 0, "", 1, "run", "2023-06-01", ""
local counter = 0
local thread_count = 0
local granting = {}  -- request ids answered pending on this thread, to grant next
grants = 0  -- a global: done() reads it from each thread
local all_threads = {}

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(all_threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then ids[#ids + 1] = line end
  end
  offset, token, threads = tonumber(args[2]), args[3], tonumber(args[4])
  run_id, day, checker = args[5], args[6], args[7] or args[3]
end

function request()
  local pending = table.remove(granting, 1)
  if pending then
    grants = grants + 1
    return wrk.format("POST", "/approvals/" .. pending .. "/grant",
                      {["Authorization"] = "Bearer " .. checker,
                       ["Idempotency-Key"] = run_id .. "-grant-" .. pending}, "")
  end
  local j = offset + tid + counter * threads
  counter = counter + 1
  local group = ids[(j % #ids) + 1]
  local tranche = math.floor(j / #ids) + 1
  local body = string.format(
    '{"tranche": %d, "amount": 1000000, "disbursed_on": "%s", "budget_year": %s}',
    tranche, day, string.sub(day, 1, 4))
  local headers = {["Authorization"] = "Bearer " .. token,
                   ["Content-Type"] = "application/json",
                   ["Idempotency-Key"] = run_id .. "-" .. j}
  return wrk.format("POST", "/groups/" .. group .. "/funding", headers, body)
end

function response(status, headers, body)
  if status == 202 then
    local id = string.match(body, '"request_id"%s*:%s*"([%w%-]+)"')
    if id then table.insert(granting, id) end
  end
end

function done(summary, latency, requests)
  local granted = 0
  for _, thread in ipairs(all_threads) do
    granted = granted + (thread:get("grants") or 0)
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"grants": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), granted))
end
