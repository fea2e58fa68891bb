package.path = "roles/router/files/lua/?.lua;" .. package.path

local cjson = require("cjson")
local model_field = require("llm_router.model_field")

local find = model_field.find

-- The model alone on success (its span is checked separately), else nil and the reason.
local function result(body)
  local model, reason = find(body)
  if model then
    return { model }
  end
  return { nil, reason }
end

-- A chat request whose messages carry an image of about `size` bytes of base64.
local function image_body(size, tail)
  local chunk = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg"
  local b64 = string.rep(chunk, math.ceil(size / #chunk)):sub(1, size)
  return '{"messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},'
    .. '{"type":"image_url","image_url":{"url":"data:image/png;base64,'
    .. b64
    .. '"}}]}],"max_tokens":16'
    .. tail
    .. "}"
end

describe("model_field.find", function()
  describe("reason codes", function()
    local cases = {
      not_json = {
        "", "   \n", "x", "{", "{ ", '{"model"', '{"model":', '{"model":"a"', '{"model":"a",}',
        '{"model" "a"}', '{model:"a"}', "{'model':'a'}", '{"model":"a"} x', '{"model":"a"}}',
        '{"a":01,"model":"a"}', '{"a":[},"model":"a"}', '{"model":"a\\q"}',
        '{"model":"\\ud800"}', '{"model":"a\nb"}', "\239\187\191{}", "[1,",
      },
      not_object = { "[]", '[{"model":"a"}]', '"model"', "42", "-1.5e3", "null", " true ", "false" },
      missing = { "{}", " { } ", '{"models":"a"}', '{"Model":"a"}', '{"a":{"model":"x"}}' },
      not_string = {
        '{"model":1}', '{"model":null}', '{"model":true}', '{"model":["a"]}', '{"model":{"a":"b"}}',
        '{"model":"a","model":2}',
      },
    }
    for code, bodies in pairs(cases) do
      for _, body in ipairs(bodies) do
        it(code .. ": " .. body:gsub("\n", "\\n"), function()
          assert.same({ nil, code }, result(body))
        end)
      end
    end

    it("not_json: nil body", function()
      assert.same({ nil, "not_json" }, result(nil))
    end)
  end)

  it("returns the model", function()
    assert.same({ "qwen" }, result('{"model":"qwen"}'))
    assert.same({ "" }, result('{"model":""}'))
    assert.same({ "Qwen/Qwen2.5-72B" }, result('{"stream":true,"model":"Qwen/Qwen2.5-72B","n":1}'))
  end)

  it("returns the span of the model's JSON string", function()
    local body = '{"stream":true, "model" : "Qwen\\/x" ,"n":1}'
    local model, first, last = find(body)
    assert.equal("Qwen/x", model)
    assert.equal('"Qwen\\/x"', body:sub(first, last))
    assert.equal('{"stream":true, "model" : "tiny" ,"n":1}', body:sub(1, first - 1) .. '"tiny"' .. body:sub(last + 1))
  end)

  it("finds the model after a multi-MB messages value", function()
    local body = image_body(5 * 1024 * 1024, ',"model":"llava"')
    assert.same({ "llava" }, result(body))
  end)

  it("finds the model before a multi-MB messages value", function()
    local body = '{"model":"llava",' .. image_body(3 * 1024 * 1024, ""):sub(2)
    assert.same({ "llava" }, result(body))
  end)

  it("ignores nested model keys", function()
    local body = '{"messages":[{"role":"user","model":"inner","content":"{\\"model\\":\\"fake\\"}"}],'
      .. '"metadata":{"model":"meta","x":{"model":"deep"}},"model":"outer","tools":[{"model":"t"}]}'
    assert.same({ "outer" }, result(body))
    assert.same({ nil, "missing" }, result('{"a":[{"model":"x"}],"b":"\\"model\\":\\"y\\""}'))
  end)

  it("returns the last of repeated model keys, as cjson does", function()
    local body = '{"model":"first","x":1,"model":"second"}'
    assert.same({ "second" }, result(body))
    assert.equal(cjson.decode(body).model, find(body))
  end)

  it("handles escapes in keys", function()
    assert.same({ "a" }, result('{"mo\\u0064el":"a"}'))
    assert.same({ "b" }, result('{"\\u006dodel":"b"}'))
    assert.same({ "c" }, result('{"model\\"":"x","a\\\\":"y","model":"c"}'))
    assert.same({ nil, "missing" }, result('{"model\\\\":"x","\\"model":"y"}'))
    assert.same({ nil, "not_json" }, result('{"mo\\del":"x"}'))
  end)

  it("handles escapes in the model value", function()
    assert.same({ 'a"b\\c/d\b\f\n\r\t' }, result('{"model":"a\\"b\\\\c\\/d\\b\\f\\n\\r\\t"}'))
    assert.same({ "org/model" }, result('{"model":"org\\/model"}'))
  end)

  it("decodes unicode escapes to UTF-8, surrogate pairs included", function()
    assert.same({ "caf\195\169" }, result('{"model":"caf\\u00e9"}'))
    assert.same({ "\226\130\172" }, result('{"model":"\\u20AC"}'))
    assert.same({ "x\240\159\152\128y" }, result('{"model":"x\\ud83d\\ude00y"}'))
    assert.same({ "caf\195\169" }, result('{"model":"caf\195\169"}'))
    assert.same({ nil, "not_json" }, result('{"model":"\\ude00"}'))
    assert.same({ nil, "not_json" }, result('{"model":"\\ud83d\\u0041"}'))
  end)

  it("accepts whitespace wherever JSON allows it", function()
    local ws = " \t\r\n"
    local body = ws .. "{" .. ws .. '"a"' .. ws .. ":" .. ws .. "[" .. ws .. "1" .. ws .. "," .. ws
      .. "{" .. ws .. "}" .. ws .. "]" .. ws .. "," .. ws .. '"model"' .. ws .. ":" .. ws .. '"m"'
      .. ws .. "," .. ws .. '"n"' .. ws .. ":" .. ws .. "null" .. ws .. "}" .. ws
    assert.same({ "m" }, result(body))
    assert.same({ nil, "not_json" }, result('{"model":"m"\f}'))
  end)

  it("reports not_json for every truncation, and never loops or errors", function()
    local body = ' {"messages":[{"role":"user","content":"a \\"quoted\\" \\\\ text","x":[1,-2.5e3,true,'
      .. 'false,null,{}]}],"model" : "mod\\u00e9l\\ud83d\\ude00","temperature":0.7,"stop":["}","]"]} '
    assert.same({ "mod\195\169l\240\159\152\128" }, result(body))
    local last_brace = #body - 1
    for cut = 0, #body do
      local prefix = body:sub(1, cut)
      local ok, model, err = pcall(find, prefix)
      assert.is_true(ok, "error at cut " .. cut)
      if cut < last_brace then
        assert.same({ nil, "not_json" }, { model, err }, "cut " .. cut)
        assert.is_false(pcall(cjson.decode, prefix), "cjson accepted cut " .. cut)
      else
        assert.equal("mod\195\169l\240\159\152\128", model)
      end
    end
  end)

  it("never errors on mutated bodies", function()
    math.randomseed(7)
    local body = '{"messages":[{"content":"a\\"b","x":[1,{"y":null}]}],"model":"m\\u00e9","t":0.5}'
    local bytes = { '"', "\\", "{", "}", "[", "]", ",", ":", " ", "a", "0", "u", "\0", "\255" }
    local codes = { not_json = true, not_object = true, missing = true, not_string = true }
    for _ = 1, 3000 do
      local s = body
      for _ = 1, math.random(1, 3) do
        local p = math.random(1, #s)
        s = s:sub(1, p - 1) .. bytes[math.random(#bytes)] .. s:sub(p + 1)
      end
      local ok, model, err = pcall(find, s)
      assert.is_true(ok, s)
      assert.is_true(type(model) == "string" or codes[err] == true, s)
    end
  end)

  describe("agrees with cjson.decode on generated bodies", function()
    math.randomseed(42)
    local random = math.random
    local WS = { "", "", "", " ", "\n", "\t", "\r\n  " }
    local KEYS = { "model", "model", "messages", "a", "Model", "mod\"el", "model\\", "a/b", "\195\169", "" }
    local CHARS = {
      "a", "b", "Z", "0", " ", "/", "-", ".", ":", "{", "}", "[", "]", ",", '"', "\\", "\n", "\t",
      "\1", "\31", "\195\169", "\226\130\172", "\240\159\152\128",
    }
    local SHORT = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["/"] = "\\/" }

    local function ws()
      return WS[random(#WS)]
    end

    -- Encodes each character raw or escaped, at random, where JSON allows the choice.
    local function encode_string(s)
      local out = {}
      for _, c in ipairs(s) do
        local b = c:byte()
        local r = random(3)
        if c == '"' or c == "\\" or b < 32 then
          out[#out + 1] = (r == 1 or not SHORT[c]) and string.format("\\u%04x", b) or SHORT[c]
        elseif r == 1 and #c == 1 then
          out[#out + 1] = SHORT[c] or string.format("\\u%04X", b)
        elseif r == 1 and c == "\240\159\152\128" then
          out[#out + 1] = "\\ud83d\\uDE00"
        elseif r == 1 and c == "\195\169" then
          out[#out + 1] = "\\u00e9"
        else
          out[#out + 1] = c
        end
      end
      return '"' .. table.concat(out) .. '"'
    end

    local function chars(s)
      local list = {}
      for c in s:gmatch("[%z\1-\127\194-\244][\128-\191]*") do
        list[#list + 1] = c
      end
      return list
    end

    local function random_chars()
      local list = {}
      for i = 1, random(0, 8) do
        list[i] = CHARS[random(#CHARS)]
      end
      return list
    end

    local gen_value
    local function gen_object(depth)
      local members = {}
      for i = 1, random(0, 5) do
        members[i] = ws() .. encode_string(chars(KEYS[random(#KEYS)])) .. ws() .. ":" .. ws()
          .. gen_value(depth + 1) .. ws()
      end
      return "{" .. ws() .. table.concat(members, ",") .. "}"
    end

    function gen_value(depth)
      local r = random(depth > 3 and 6 or 8)
      if r <= 2 then
        return encode_string(random_chars())
      elseif r == 3 then
        return ({ "0", "-1", "12.5", "1e3", "-0.25E-2" })[random(5)]
      elseif r == 4 then
        return ({ "true", "false", "null" })[random(3)]
      elseif r <= 6 then
        return encode_string(random_chars())
      elseif r == 7 then
        local items = {}
        for i = 1, random(0, 4) do
          items[i] = ws() .. gen_value(depth + 1) .. ws()
        end
        return "[" .. ws() .. table.concat(items, ",") .. "]"
      end
      return gen_object(depth)
    end

    it("for 5000 bodies", function()
      local counts = {}
      for _ = 1, 5000 do
        local is_object = random(10) > 1
        local top = is_object and gen_object(0) or gen_value(0)
        while not is_object and top:sub(1, 1) == "{" do
          top = gen_value(0)
        end
        local body = ws() .. top .. ws()
        local decoded = cjson.decode(body)
        local expected
        if not is_object then
          expected = { nil, "not_object" }
        elseif type(decoded.model) == "string" then
          expected = { decoded.model }
        elseif decoded.model == nil then
          expected = { nil, "missing" }
        else
          expected = { nil, "not_string" }
        end
        assert.same(expected, result(body), body)
        local kind = expected[2] or "string"
        counts[kind] = (counts[kind] or 0) + 1
      end
      -- The generator must exercise every outcome for the comparison to mean anything.
      for _, kind in ipairs({ "string", "missing", "not_string", "not_object" }) do
        assert.is_true((counts[kind] or 0) > 100, kind)
      end
    end)
  end)

  it("is fast on a 20 MB body (timing printed, not asserted)", function()
    local body = image_body(20 * 1024 * 1024, ',"model":"llava"')
    local escaped = body:gsub("/", "\\/")
    local function best_ms(f, s)
      local best = math.huge
      for _ = 1, 3 do
        local t = os.clock()
        f(s)
        best = math.min(best, (os.clock() - t) * 1000)
      end
      return best
    end
    -- The scanner's slow case: no long strings to jump over, only short ones to step between.
    local message = '{"role":"user","content":"a short \\"quoted\\" line of text"}'
    local text = '{"messages":[' .. string.rep(message .. ",", math.floor(#body / (#message + 1)))
      .. message .. '],"model":"llava"}'
    assert.equal("llava", find(body))
    assert.equal("llava", find(escaped))
    assert.equal("llava", find(text))
    print(string.format(
      "\nmodel_field.find on %.1f MB image body: %.2f ms (with \\/ escapes: %.2f ms, cjson.decode:"
        .. " %.1f ms); on %.1f MB of short messages: %.1f ms (cjson.decode: %.1f ms)",
      #body / 1048576, best_ms(find, body), best_ms(find, escaped), best_ms(cjson.decode, body),
      #text / 1048576, best_ms(find, text), best_ms(cjson.decode, text)
    ))
  end)
end)

describe("model_field.find_chunked", function()
  -- read() over s in pieces of `size` bytes, as the router reads a spilled body.
  local function chunks(s, size)
    local i = 1
    return function()
      if i > #s then
        return nil
      end
      local piece = s:sub(i, i + size - 1)
      i = i + size
      return piece
    end
  end

  local deep = string.rep("[", 1000) .. string.rep("]", 1000)
  local bodies = {
    '{"model":"a"}', ' {"messages":[{"a":"b\\"]"}],"model":"x"} ', '{"model":1}', '[1,2]',
    '[{"model":"x"}]', '{"a":[1,2}', '{"a":"\\\\","model":"q"}', '{"a":"\\\\\\"","model":"q"}',
    '{"model":"a"} x', '{"model":"a",}', "", "{", '{"a":{"b":[[[]]]},"model":"m\\u00e9"}',
    '{"model":"a","model":"b"}', '{"a":tru[e],"model":"x"}', '"str"', '{"a":[', '{"a":"]"}',
    '{"x":{"model":"in"},"model":"out"}', '{"a":[]]}', "}{", '{"a":{}}}', '{"model":"a\\\\"}',
    '{"a":[{"b":"\\\\\\\\"}],"model":"esc"}', '{"a":["x\\"]"],"model":"y"}',
    '{"a":' .. deep .. ',"model":"x"}', '{"a":[' .. deep .. '],"model":"x"}', deep, "[" .. deep .. "]",
    "[" .. string.rep("[", 999) .. string.rep("]", 999) .. "]",
    image_body(5000, ',"model":"llava"'),
  }

  it("gives find's answer for every body and chunk size", function()
    for _, body in ipairs(bodies) do
      local want = { model_field.find(body) }
      want = want[1] and { want[1] } or want
      for _, size in ipairs({ 1, 2, 3, 5, 7, 64, 65536 }) do
        local model, reason = model_field.find_chunked(chunks(body, size))
        assert.same(want, model and { model } or { nil, reason }, body:sub(1, 80) .. " in " .. size .. "-byte chunks")
      end
    end
  end)
end)
