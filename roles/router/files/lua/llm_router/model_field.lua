-- Reads the top-level "model" of an OpenAI-style request body without decoding the body: the
-- router needs only that one string to pick an upstream, while the rest of the body (often
-- megabytes of base64 images) is passed through untouched.
--
-- find(body) returns the model name and the span (first and last byte) of its JSON string in
-- the body, or nil and one of:
--   "not_json"   empty, malformed or truncated body
--   "not_object" valid JSON whose top level is not an object
--   "missing"    no top-level "model" member
--   "not_string" the (last) "model" member is not a string
-- A repeated "model" key yields the last value, as lua-cjson and Python's json do, so the
-- router and the upstream agree on the name; this means the whole body is always scanned.
local byte = string.byte
local scan = require("llm_router.json_scan")

local _M = {}

local B_QUOTE = byte('"')

-- body may be nil (ngx.req.get_body_data() gives nil for an empty body).
function _M.find(body)
  if body == nil then
    return nil, "not_json"
  end
  local first, last = scan.member(body, "model")
  if not first then
    return nil, last
  end
  if byte(body, first) ~= B_QUOTE then
    return nil, "not_string"
  end
  local model = scan.decode_string(body, first)
  if not model then
    return nil, "not_json"
  end
  return model, first, last
end

-- The same answer for a body read in chunks (see json_scan.outline), without the span: for
-- bodies spilled to a file, which are never built into one Lua string on this path.
function _M.find_chunked(read)
  local outline, err = scan.outline(read)
  if not outline then
    return nil, err
  end
  local model, reason = _M.find(outline)
  if not model then
    return nil, reason
  end
  return model
end

return _M
