-- wrk script: the 2 KB POSTs of post-2k.lua, checking that every 200 carries the id of the
-- request it answers (the mock backends echo X-Req-Id into the body as "req_id", and as an
-- X-Req-Id header). A compressed body (Content-Encoding) cannot be searched from here, so its
-- X-Req-Id header is checked instead: header and body come from the same backend reply.
-- A script that sets `body_script` before running this one loads that instead of post-2k.lua.
--
-- Run it with one connection per thread (`-tN -cN`): each thread then alternates request()
-- and response(), so the last id a thread sent is the id its next response must carry.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. (body_script or "post-2k.lua"))

-- Main state only: the threads, so done() can read their counts.
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
  -- Ids unique across threads, so a reply crossing to another connection cannot match.
  thread:set("id_prefix", "t" .. #threads .. "-")
end

-- Per thread state.
checked = 0
mismatches = 0
local sent = 0
local last_id = nil

request = function()
  sent = sent + 1
  last_id = id_prefix .. sent
  wrk.headers["X-Req-Id"] = last_id
  return wrk.format(nil, nil, nil, wrk.body)
end

response = function(status, headers, body)
  if status ~= 200 then
    return
  end
  checked = checked + 1
  local encoded, echoed = false, nil
  for name, value in pairs(headers) do
    local lower = name:lower()
    if lower == "content-encoding" then
      encoded = true
    elseif lower == "x-req-id" then
      echoed = value
    end
  end
  if encoded then
    if echoed ~= last_id then
      mismatches = mismatches + 1
    end
  -- The closing quote keeps id "t1-1" from matching a body that carries "t1-12".
  elseif not body:find('"req_id":"' .. last_id .. '"', 1, true) then
    mismatches = mismatches + 1
  end
end

local report = done
done = function(summary, latency, requests)
  report(summary, latency, requests)
  local c, m = 0, 0
  for _, thread in ipairs(threads) do
    c = c + thread:get("checked")
    m = m + thread:get("mismatches")
  end
  io.write(string.format('bench-check {"checked":%d,"mismatches":%d}\n', c, m))
end
