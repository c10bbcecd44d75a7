-- wrk script: POST /groups/<id>/funding over a list of approved groups, each request a group of
-- its own until the list is used up, then the next tranche of each (the same group's next
-- tranche is sent a whole list of requests later: the earlier one has long been answered).
-- args: <file of group ids> <first request index> <bearer token> <threads> <run id> <date>
local ids = {}
local offset, token, threads, run_id, day = 0, "", 1, "run", "2023-06-01"
local counter = 0
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then ids[#ids + 1] = line end
  end
  offset, token, threads = tonumber(args[2]), args[3], tonumber(args[4])
  run_id, day = args[5], args[6]
end

function request()
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

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
