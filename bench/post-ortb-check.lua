-- wrk script: the id check of post-2k-check.lua on the OpenRTB POSTs of post-ortb.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
body_script = "post-ortb.lua"
dofile(dir .. "post-2k-check.lua")
