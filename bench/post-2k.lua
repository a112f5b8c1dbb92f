-- wrk script: POST a 2 KB JSON body (the bid-request size the splitter is made for), with a
-- request id per request so the mock backends can echo it.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"bench","imp":[{"id":"1","bidfloor":0.5}],"pad":"' .. string.rep("x", 1960) .. '"}'

local counter = 0
request = function()
  counter = counter + 1
  wrk.headers["X-Req-Id"] = tostring(counter)
  return wrk.format(nil, nil, nil, wrk.body)
end

-- One line for `cargo xtask bench` to parse: wrk's own `--latency` table stops at p99.
-- Latencies are in microseconds; non_2xx is wrk's count of statuses of 400 and above.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'bench-result {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,'
      .. '"socket_errors":%d,"non_2xx":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
