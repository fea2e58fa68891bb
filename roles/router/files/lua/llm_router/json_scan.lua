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
local B_SPACE, B_TAB, B_LF, B_CR = byte(" "), byte("\t"), byte("\n"), byte("\r")
local B_MINUS, B_PLUS, B_DOT = byte("-"), byte("+"), byte(".")
local B_0, B_9 = byte("0"), byte("9")
local B_E, B_LOWER_E = byte("E"), byte("e")

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
-- JSON whitespace bytes count, not Lua's wider %s. No whitespace or one byte of it (the ", " and
-- ": " of common encoders) never enters the loop: LuaJIT cannot compile a trace through a loop
-- that runs once per call, and gives up on the caller's trace too, leaving the whole scan to the
-- interpreter. A loop whose condition fails at once is not entered.
local function is_ws(c)
  return c == B_SPACE or c == B_TAB or c == B_LF or c == B_CR
end

local function skip_ws(s, pos)
  local c = byte(s, pos)
  if is_ws(c) then
    pos = pos + 1
    c = byte(s, pos)
    while is_ws(c) do
      pos = pos + 1
      c = byte(s, pos)
    end
  end
  if c == nil then
    return #s + 1
  end
  return pos
end
_M.skip_ws = skip_ws

-- A quote is escaped when an odd number of backslashes precedes it. Counting backwards from
-- each quote instead of stopping at every backslash keeps base64 that a client sent with escaped
-- slashes ("\/") on the fast path. The opening quote bounds the count.
local function skip_escaped_string(s, q)
  while true do
    local b = q - 1
    while byte(s, b) == B_BACKSLASH do
      b = b - 1
    end
    if (q - 1 - b) % 2 == 0 then
      return q + 1
    end
    q = find(s, '"', q + 1, true)
    if not q then
      return nil, "not_json"
    end
  end
end

-- s:byte(pos) must be '"'. Returns the position just past the closing quote. The common case, a
-- string whose first quote after the opening one is not escaped, takes no loop (see skip_ws).
local function skip_string(s, pos)
  local q = find(s, '"', pos + 1, true)
  if not q then
    return nil, "not_json"
  end
  if byte(s, q - 1) ~= B_BACKSLASH then
    return q + 1
  end
  return skip_escaped_string(s, q)
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

local function is_digit(c)
  return c ~= nil and c >= B_0 and c <= B_9
end

-- Position just past the digits at pos (pos itself when there is none).
local function skip_digits(s, pos)
  while is_digit(byte(s, pos)) do
    pos = pos + 1
  end
  return pos
end

-- Strict RFC 8259 number grammar (lua-cjson would also take "01", "1." or "NaN") over the
-- bytes pos .. stop - 1.
local function is_number(s, pos, stop)
  if byte(s, pos) == B_MINUS then
    pos = pos + 1
  end
  local c = byte(s, pos)
  if not is_digit(c) then
    return false
  end
  if c == B_0 then
    pos = pos + 1
  else
    pos = skip_digits(s, pos)
  end
  if byte(s, pos) == B_DOT then
    local e = skip_digits(s, pos + 1)
    if e == pos + 1 then
      return false
    end
    pos = e
  end
  c = byte(s, pos)
  if c == B_E or c == B_LOWER_E then
    c = byte(s, pos + 1)
    pos = (c == B_PLUS or c == B_MINUS) and pos + 2 or pos + 1
    local e = skip_digits(s, pos)
    if e == pos then
      return false
    end
    pos = e
  end
  return pos == stop
end

-- End of a literal or number: the next JSON whitespace, ",", "]" or "}" (#s + 1 at the end).
local function token_end(s, pos)
  local c = byte(s, pos)
  while c ~= nil and c ~= B_SPACE and c ~= B_TAB and c ~= B_LF and c ~= B_CR
      and c ~= B_COMMA and c ~= B_RBRACKET and c ~= B_RBRACE do
    pos = pos + 1
    c = byte(s, pos)
  end
  return pos
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
  local stop = token_end(s, pos)
  local length = stop - pos
  if length == 4 or length == 5 then
    local tok = sub(s, pos, stop - 1)
    if tok == "true" or tok == "false" or tok == "null" then
      return stop
    end
  end
  if is_number(s, pos, stop) then
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
  for i = pos + 1, stop - 2 do
    if byte(s, i) < B_SPACE then
      return nil, "not_json"
    end
  end
  local raw = sub(s, pos + 1, stop - 2)
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

-- The top level of a JSON text that arrives in chunks (read() returns the next string, nil at the
-- end), for bodies nginx has spilled to a temporary file: reading 20 MB into one Lua string costs
-- ~20 ms of fresh memory here, while 64 KB chunks reuse the same few pages. Returns the text with
-- every container nested inside the top-level value checked the way skip_container checks it
-- (bracket matching, string termination, depth) and then emptied ("[...]" becomes "[]"); all
-- else, the top-level strings included, is copied byte for byte. member() on the result gives the
-- same answer as on the whole text (not the same positions). Errors: nil, "not_json".
function _M.outline(read)
  local pieces, n = {}, 0
  local depth = 0 -- brackets open outside strings; 2 and more is inside a nested container
  local limit = MAX_DEPTH + 1 -- skip_container counts from the nested container, one below "{"
  local expect = {}
  local in_string, backslashes = false, 0
  local top_seen = false
  local chunk = read()
  while chunk do
    local len = #chunk
    local copy_from = depth <= 1 and 1 or 0 -- 0: inside a nested container, nothing to copy
    local i = 1
    while i <= len do
      if in_string then
        local q = find(chunk, '"', i, true)
        local b = (q or len + 1) - 1
        while b >= i and byte(chunk, b) == B_BACKSLASH do
          b = b - 1
        end
        local run = (q or len + 1) - 1 - b
        if b < i then
          run = run + backslashes -- the run began in an earlier chunk
        end
        if not q then
          backslashes = run
          i = len + 1
        else
          backslashes = 0
          in_string = run % 2 == 1
          i = q + 1
        end
      else
        local c = byte(chunk, i)
        if c == B_QUOTE then
          in_string = true
        elseif c == B_LBRACE or c == B_LBRACKET then
          if depth == 0 then
            if not top_seen and c == B_LBRACKET then
              limit = MAX_DEPTH -- a top-level array is skip_container's depth 1 itself
            end
            top_seen = true
          elseif depth == 1 then
            n = n + 1
            pieces[n] = sub(chunk, copy_from, i)
            copy_from = 0
          elseif depth == limit then
            return nil, "not_json"
          end
          depth = depth + 1
          expect[depth] = CLOSER[c]
        elseif c == B_RBRACE or c == B_RBRACKET then
          if depth >= 2 then
            if c ~= expect[depth] then
              return nil, "not_json"
            end
            if depth == 2 then
              copy_from = i
            end
            depth = depth - 1
          elseif depth == 1 then
            depth = 0
          end
        end
        i = i + 1
      end
    end
    if copy_from > 0 then
      n = n + 1
      pieces[n] = sub(chunk, copy_from)
    end
    chunk = read()
  end
  if depth >= 2 then
    return nil, "not_json"
  end
  return concat(pieces, "", 1, n)
end

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
