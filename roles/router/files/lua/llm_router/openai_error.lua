-- Error bodies in OpenAI's shape, {"error":{"message","type","param","code"}}, so that OpenAI
-- client libraries raise their usual exceptions for errors the router answers itself.
--
-- type follows OpenAI: every 4xx, 401 included, is "invalid_request_error"; 5xx is
-- "server_error". code defaults per status: 401 "invalid_api_key" and 404 "model_not_found"
-- are what OpenAI sends; 405 "method_not_allowed" and 413 "request_too_large" name the router's
-- own refusals; other statuses (5xx included, as at OpenAI) default to null.
--
-- The encoding is done here rather than with lua-cjson, which escapes "/" as "\/" (model ids
-- are full of slashes) and cannot tell an absent param from an empty table.
local byte = string.byte
local char = string.char
local find = string.find
local format = string.format
local gsub = string.gsub
local sub = string.sub
local concat = table.concat

local _M = {}

local DEFAULT_CODES = {
  [401] = "invalid_api_key",
  [404] = "model_not_found",
  [405] = "method_not_allowed",
  [413] = "request_too_large",
}

local ESCAPES = {
  ['"'] = '\\"',
  ["\\"] = "\\\\",
  ["\b"] = "\\b",
  ["\f"] = "\\f",
  ["\n"] = "\\n",
  ["\r"] = "\\r",
  ["\t"] = "\\t",
}
for b = 0, 31 do
  local c = char(b)
  ESCAPES[c] = ESCAPES[c] or format("\\u%04x", b)
end

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- Length of the well-formed UTF-8 sequence starting at i (RFC 3629: no overlongs, surrogates
-- or code points above U+10FFFF), or nil.
local function utf8_len(s, i)
  local c = byte(s, i)
  if c < 0x80 then
    return 1
  end
  local n, lo, hi -- continuation bytes, range of the first one
  if c >= 0xC2 and c <= 0xDF then
    n, lo, hi = 1, 0x80, 0xBF
  elseif c == 0xE0 then
    n, lo, hi = 2, 0xA0, 0xBF
  elseif c == 0xED then
    n, lo, hi = 2, 0x80, 0x9F
  elseif c >= 0xE1 and c <= 0xEF then
    n, lo, hi = 2, 0x80, 0xBF
  elseif c == 0xF0 then
    n, lo, hi = 3, 0x90, 0xBF
  elseif c >= 0xF1 and c <= 0xF3 then
    n, lo, hi = 3, 0x80, 0xBF
  elseif c == 0xF4 then
    n, lo, hi = 3, 0x80, 0x8F
  else
    return nil
  end
  local b = byte(s, i + 1)
  if not b or b < lo or b > hi then
    return nil
  end
  for k = 2, n do
    b = byte(s, i + k)
    if not b or b < 0x80 or b > 0xBF then
      return nil
    end
  end
  return n + 1
end

-- Messages echo client input (the requested model name), which nothing has checked for UTF-8;
-- one stray byte would make the whole body invalid JSON, so bad bytes become U+FFFD.
local function valid_utf8(s)
  if not find(s, "[\128-\255]") then
    return s
  end
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    local l = utf8_len(s, i)
    n = n + 1
    if l then
      out[n] = sub(s, i, i + l - 1)
      i = i + l
    else
      out[n] = REPLACEMENT
      i = i + 1
    end
  end
  return concat(out, "", 1, n)
end

local function quote(s)
  return '"' .. (gsub(valid_utf8(s), '[%z\1-\31"\\]', ESCAPES)) .. '"'
end

local function quote_or_null(s)
  if s == nil or s == false then
    return "null"
  end
  return quote(s)
end

-- status: the HTTP status the body goes with. message: text for humans. param: the offending
-- request parameter or nil. code: nil for the status's default, false for an explicit null.
function _M.body(status, message, param, code)
  if code == nil then
    code = DEFAULT_CODES[status]
  end
  return concat({
    '{"error":{"message":',
    quote(message),
    ',"type":',
    status >= 500 and '"server_error"' or '"invalid_request_error"',
    ',"param":',
    quote_or_null(param),
    ',"code":',
    quote_or_null(code),
    "}}",
  })
end

return _M
