-- Merges the /v1/models responses of several backends into one list. The "data" elements are
-- spliced as raw text rather than decoded and re-encoded: re-encoding with lua-cjson would turn
-- "/" in model ids into "\/" and empty objects into arrays ("{}" vs "[]" is lost in Lua tables).
local byte = string.byte
local sub = string.sub
local concat = table.concat
local type = type
local scan = require("llm_router.json_scan")

local _M = {}

local B_LBRACKET = byte("[")
local WS = { [byte(" ")] = true, [byte("\t")] = true, [byte("\n")] = true, [byte("\r")] = true }

-- bodies: array of response body texts, one per backend. Returns the merged body, and an array
-- of the indexes of bodies that were not a JSON object with a top-level "data" array (those
-- contribute nothing; the array is empty when all were usable).
function _M.models_body(bodies)
  local parts, n, bad = {}, 0, {}
  for i = 1, #bodies do
    local body = bodies[i]
    local first, last
    if type(body) == "string" then
      first, last = scan.member(body, "data")
    end
    if first and byte(body, first) == B_LBRACKET then
      local a = scan.skip_ws(body, first + 1)
      local b = last - 1
      while b >= a and WS[byte(body, b)] do
        b = b - 1
      end
      if b >= a then
        n = n + 1
        parts[n] = sub(body, a, b)
      end
    else
      bad[#bad + 1] = i
    end
  end
  return '{"object":"list","data":[' .. concat(parts, ",", 1, n) .. "]}", bad
end

return _M
