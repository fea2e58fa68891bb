package.path = "roles/router/files/lua/?.lua;" .. package.path

local scan = require("llm_router.json_scan")

describe("json_scan", function()
  describe("skip_ws", function()
    it("skips only JSON whitespace", function()
      assert.equal(5, scan.skip_ws(" \t\r\nx", 1))
      assert.equal(1, scan.skip_ws("\fx", 1))
      assert.equal(4, scan.skip_ws("   ", 1))
    end)
  end)

  describe("skip_string", function()
    local cases = {
      { '"abc"', 6 },
      { '""', 3 },
      { '"a\\"b"', 7 },
      { '"a\\\\"b"', 6 },
      { '"a\\\\\\"b"', 9 },
      { '"\\/\\/x"', 8 },
    }
    for _, c in ipairs(cases) do
      it("ends " .. c[1] .. " at " .. c[2], function()
        assert.equal(c[2], scan.skip_string(c[1] .. " ,", 1))
      end)
    end

    it("rejects unterminated strings", function()
      for _, s in ipairs({ '"', '"abc', '"abc\\"', '"\\\\\\"' }) do
        local stop, err = scan.skip_string(s, 1)
        assert.is_nil(stop, s)
        assert.equal("not_json", err)
      end
    end)

    it("handles long backslash runs", function()
      local s = '"' .. string.rep("\\", 10001) .. '""'
      assert.equal(#s + 1, scan.skip_string(s, 1))
    end)
  end)

  describe("skip_value", function()
    local valid = {
      "0", "-0", "12", "-12.5", "1e5", "1E+5", "2.5e-3", "true", "false", "null",
      '"s"', "{}", "[]", '{"a":[1,{"b":"]}"}]}', '[[[]],{"}":"["}]', '["\\"]"]',
    }
    for _, v in ipairs(valid) do
      it("skips " .. v, function()
        assert.equal(#v + 1, scan.skip_value(v .. "}", 1))
        assert.equal(#v + 1, scan.skip_value(v .. ",", 1))
        assert.equal(#v + 1, scan.skip_value(v .. " ", 1))
      end)
    end

    local invalid = {
      "", "01", "-", "1.", ".5", "1e", "+1", "NaN", "Infinity", "tru", "nul", "True",
      "[", "{", "[}", "{]", '["]', "[[]", '{"a":"}', "'a'",
    }
    for _, v in ipairs(invalid) do
      it("rejects " .. (v == "" and "empty input" or v), function()
        local stop, err = scan.skip_value(v, 1)
        assert.is_nil(stop)
        assert.equal("not_json", err)
      end)
    end

    it("limits nesting depth like lua-cjson", function()
      local ok = string.rep("[", 1000) .. string.rep("]", 1000)
      assert.equal(#ok + 1, scan.skip_value(ok, 1))
      local deep = string.rep("[", 1001) .. string.rep("]", 1001)
      assert.is_nil(scan.skip_value(deep, 1))
    end)
  end)

  describe("decode_string", function()
    local cases = {
      { '"plain"', "plain" },
      { '"a\\"b\\\\c\\/d"', 'a"b\\c/d' },
      { '"\\b\\f\\n\\r\\t"', "\b\f\n\r\t" },
      { '"\\u0041\\u00e9\\u20AC"', "A\195\169\226\130\172" },
      { '"\\ud83d\\ude00"', "\240\159\152\128" },
      { '"\\uDBFF\\uDFFF"', "\244\143\191\191" },
      { '"\\u0000"', "\0" },
      { '"caf\195\169"', "caf\195\169" },
    }
    for _, c in ipairs(cases) do
      it("decodes " .. c[1], function()
        local value, stop = scan.decode_string(c[1] .. ",", 1)
        assert.equal(c[2], value)
        assert.equal(#c[1] + 1, stop)
      end)
    end

    local invalid = {
      '"\\x"', '"\\u12"', '"\\u12g4"', '"\\ud83d"', '"\\ud83dx"', '"\\ud83d\\u0041"',
      '"\\ude00"', '"a\tb"', '"a\nb"', '"a\0b"', '"abc',
    }
    for _, v in ipairs(invalid) do
      it("rejects " .. v, function()
        local value, err = scan.decode_string(v, 1)
        assert.is_nil(value)
        assert.equal("not_json", err)
      end)
    end
  end)

  describe("member", function()
    it("returns the value span", function()
      local s = '{ "a" : [1, 2] , "b":"x" }'
      local first, last = scan.member(s, "a")
      assert.equal("[1, 2]", s:sub(first, last))
      first, last = scan.member(s, "b")
      assert.equal('"x"', s:sub(first, last))
    end)

    it("returns the last of repeated keys", function()
      local s = '{"a":1,"a":22}'
      local first, last = scan.member(s, "a")
      assert.equal("22", s:sub(first, last))
    end)

    it("reports missing, not_object and not_json", function()
      assert.same({ nil, "missing" }, { scan.member('{"b":{"a":1}}', "a") })
      assert.same({ nil, "not_object" }, { scan.member("[1]", "a") })
      assert.same({ nil, "not_json" }, { scan.member("[1", "a") })
      assert.same({ nil, "not_json" }, { scan.member('{"a":1', "a") })
      assert.same({ nil, "not_json" }, { scan.member('{"a":1}}', "a") })
    end)
  end)
end)
