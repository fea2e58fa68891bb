-- JSON scanning primitives for bodies too large to decode on every request: chat requests carry
-- megabytes of base64 images, and a full decode of 20 MB costs ~100 ms. Strings are crossed by
-- jumping from quote to quote with plain string.find (memchr speed, and image bodies are nearly
-- all string), containers by a bracket-counting byte loop, and no Lua values are built.
--
-- Strictness: the top-level object's members are parsed exactly (keys, colons, commas, literals,
-- numbers, trailing bytes), and decode_string is strict. The inside of a skipped string or
-- container is checked only for bracket matching and string termination: the upstream parses
-- the body fully anyway, and validating every byte would cost what the scanner exists to save.
--
-- Failures return nil, "not_json"; member() can also return nil, "not_object" or "missing".
local byte = string.byte
local char = string.char
local find = string.find
local sub = string.sub
local concat = table.concat
local floor = math.floor
local tonumber = tonumber

local _M = {}

-- lua-cjson's default decode_max_depth. Bounding the bracket stack also keeps a hostile body of
-- nothing but "[" from growing it without limit.
local MAX_DEPTH = 1000

local B_QUOTE = byte('"')
local B_BACKSLASH = byte("\\")
local B_LBRACE, B_RBRACE = byte("{"), byte("}")
local B_LBRACKET, B_RBRACKET = byte("["), byte("]")
local B_COLON, B_COMMA = byte(":"), byte(",")
local B_U = byte("u")

local CLOSER = { [B_LBRACE] = B_RBRACE, [B_LBRACKET] = B_RBRACKET }

local SIMPLE_ESCAPES = {
  [B_QUOTE] = '"',
  [B_BACKSLASH] = "\\",
  [byte("/")] = "/",
  [byte("b")] = "\b",
  [byte("f")] = "\f",
  [byte("n")] = "\n",
  [byte("r")] = "\r",
  [byte("t")] = "\t",
}

-- Position of the first non-whitespace byte at or after pos (#s + 1 at the end). Only the four
-- JSON whitespace bytes count, not Lua's wider %s.
local function skip_ws(s, pos)
  return find(s, "[^ \t\n\r]", pos) or #s + 1
end
_M.skip_ws = skip_ws

-- s:byte(pos) must be '"'. Returns the position just past the closing quote.
local function skip_string(s, pos)
  local i = pos + 1
  while true do
    local q = find(s, '"', i, true)
    if not q then
      return nil, "not_json"
    end
    -- A quote is escaped when an odd number of backslashes precedes it. Counting backwards
    -- from each quote instead of stopping at every backslash keeps base64 that a client sent
    -- with escaped slashes ("\/") on the fast path. The opening quote bounds the count.
    local b = q - 1
    while byte(s, b) == B_BACKSLASH do
      b = b - 1
    end
    if (q - 1 - b) % 2 == 0 then
      return q + 1
    end
    i = q + 1
  end
end
_M.skip_string = skip_string

-- s:byte(pos) must be "{" or "[". Returns the position just past the matching bracket. Bytes
-- outside strings are stepped through one by one: LuaJIT compiles that loop, but not a
-- string.find character class, which measured 4-12x slower on bodies of many short strings or
-- long number arrays.
local function skip_container(s, pos)
  local expect = { CLOSER[byte(s, pos)] }
  local depth = 1
  local i = pos + 1
  local len = #s
  while i <= len do
    local c = byte(s, i)
    if c == B_QUOTE then
      i = skip_string(s, i)
      if not i then
        return nil, "not_json"
      end
    else
      if c == B_LBRACE or c == B_LBRACKET then
        if depth == MAX_DEPTH then
          return nil, "not_json"
        end
        depth = depth + 1
        expect[depth] = CLOSER[c]
      elseif c == B_RBRACE or c == B_RBRACKET then
        if c ~= expect[depth] then
          return nil, "not_json"
        end
        if depth == 1 then
          return i + 1
        end
        depth = depth - 1
      end
      i = i + 1
    end
  end
  return nil, "not_json"
end

-- Strict RFC 8259 number grammar (lua-cjson would also take "01", "1." or "NaN").
local function is_number(tok)
  local _, e = find(tok, "^%-?%d+")
  if not e or find(tok, "^%-?0%d") then
    return false
  end
  local _, f = find(tok, "^%.%d+", e + 1)
  e = f or e
  _, f = find(tok, "^[eE][%+%-]?%d+", e + 1)
  return (f or e) == #tok
end

-- pos must be at the value's first byte (after whitespace). Returns the position just past it.
function _M.skip_value(s, pos)
  local c = byte(s, pos)
  if c == B_QUOTE then
    return skip_string(s, pos)
  end
  if c == B_LBRACE or c == B_LBRACKET then
    return skip_container(s, pos)
  end
  local stop = find(s, "[ \t\n\r,%]}]", pos) or #s + 1
  local tok = sub(s, pos, stop - 1)
  if tok == "true" or tok == "false" or tok == "null" or is_number(tok) then
    return stop
  end
  return nil, "not_json"
end
local skip_value = _M.skip_value

local function hex4(s, pos)
  local h = sub(s, pos, pos + 3)
  if #h == 4 and not find(h, "[^%x]") then
    return tonumber(h, 16)
  end
  return nil
end

local function utf8_char(cp)
  if cp < 0x80 then
    return char(cp)
  elseif cp < 0x800 then
    return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(
    0xF0 + floor(cp / 0x40000),
    0x80 + floor(cp / 0x1000) % 0x40,
    0x80 + floor(cp / 0x40) % 0x40,
    0x80 + cp % 0x40
  )
end

-- s:byte(pos) must be '"'. Returns the unescaped string and the position just past it. Raw
-- control bytes, unknown escapes and lone surrogates are errors, as they are for lua-cjson
-- (which, unlike this, accepts raw control bytes).
function _M.decode_string(s, pos)
  local stop = skip_string(s, pos)
  if not stop then
    return nil, "not_json"
  end
  local raw = sub(s, pos + 1, stop - 2)
  if find(raw, "[%z\1-\31]") then
    return nil, "not_json"
  end
  if not find(raw, "\\", 1, true) then
    return raw, stop
  end
  local out, n, i = {}, 0, 1
  while true do
    local b = find(raw, "\\", i, true)
    if not b then
      break
    end
    n = n + 1
    out[n] = sub(raw, i, b - 1)
    local e = byte(raw, b + 1)
    local simple = SIMPLE_ESCAPES[e]
    if simple then
      n = n + 1
      out[n] = simple
      i = b + 2
    elseif e == B_U then
      local cp = hex4(raw, b + 2)
      if not cp or (cp >= 0xDC00 and cp <= 0xDFFF) then
        return nil, "not_json"
      end
      i = b + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = sub(raw, i, i + 1) == "\\u" and hex4(raw, i + 2)
        if not lo or lo < 0xDC00 or lo > 0xDFFF then
          return nil, "not_json"
        end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
        i = i + 6
      end
      n = n + 1
      out[n] = utf8_char(cp)
    else
      return nil, "not_json"
    end
  end
  n = n + 1
  out[n] = sub(raw, i)
  return concat(out, "", 1, n), stop
end
local decode_string = _M.decode_string

-- Span (first and last byte) of the value of the top-level member `key` of the JSON text s.
-- When the key repeats the last one wins, as in lua-cjson and Python's json. The whole object
-- is walked even after a match, so a malformed tail or a later duplicate is never missed.
-- Errors: "not_json", "not_object" (valid JSON whose top level is not an object), "missing".
function _M.member(s, key)
  local pos = skip_ws(s, 1)
  if byte(s, pos) ~= B_LBRACE then
    local stop = pos <= #s and skip_value(s, pos)
    if stop and skip_ws(s, stop) > #s then
      return nil, "not_object"
    end
    return nil, "not_json"
  end
  local first, last
  pos = skip_ws(s, pos + 1)
  if byte(s, pos) == B_RBRACE then
    pos = pos + 1
  else
    while true do
      if byte(s, pos) ~= B_QUOTE then
        return nil, "not_json"
      end
      local key_end = skip_string(s, pos)
      if not key_end then
        return nil, "not_json"
      end
      local k = sub(s, pos + 1, key_end - 2)
      -- Escaped keys are rare; "mod\u0065l" is still the key "model" to a decoder.
      if find(k, "\\", 1, true) then
        k = decode_string(s, pos)
        if not k then
          return nil, "not_json"
        end
      end
      pos = skip_ws(s, key_end)
      if byte(s, pos) ~= B_COLON then
        return nil, "not_json"
      end
      pos = skip_ws(s, pos + 1)
      local value_end = skip_value(s, pos)
      if not value_end then
        return nil, "not_json"
      end
      if k == key then
        first, last = pos, value_end - 1
      end
      pos = skip_ws(s, value_end)
      local c = byte(s, pos)
      if c == B_RBRACE then
        pos = pos + 1
        break
      end
      if c ~= B_COMMA then
        return nil, "not_json"
      end
      pos = skip_ws(s, pos + 1)
    end
  end
  if skip_ws(s, pos) <= #s then
    return nil, "not_json"
  end
  if not first then
    return nil, "missing"
  end
  return first, last
end

return _M
