-- wrk script: the 2 KB POSTs of post-2k.lua, each connection pausing between requests: the
-- light side of the skewed measurement, many long-lived connections that each ask little.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "post-2k.lua")

-- Milliseconds a connection waits after a response before its next request.
local pause_ms = 20

delay = function()
  return pause_ms
end
