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
