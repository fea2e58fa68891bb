package.path = "roles/router/files/lua/?.lua;" .. package.path

local cjson = require("cjson")
local openai_error = require("llm_router.openai_error")

local body = openai_error.body

describe("openai_error.body", function()
  it("has OpenAI's shape and member order", function()
    assert.equal(
      '{"error":{"message":"The model `x` does not exist.","type":"invalid_request_error",'
        .. '"param":"model","code":"model_not_found"}}',
      body(404, "The model `x` does not exist.", "model")
    )
  end)

  it("encodes absent param and code as null", function()
    local text = body(400, "bad")
    assert.equal('{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}', text)
    local e = cjson.decode(text).error
    assert.equal(cjson.null, e.param)
    assert.equal(cjson.null, e.code)
  end)

  it("derives type and default code from the status", function()
    local expected = {
      [400] = { "invalid_request_error", cjson.null },
      [401] = { "invalid_request_error", "invalid_api_key" },
      [404] = { "invalid_request_error", "model_not_found" },
      [405] = { "invalid_request_error", "method_not_allowed" },
      [413] = { "invalid_request_error", "request_too_large" },
      [500] = { "server_error", cjson.null },
      [502] = { "server_error", cjson.null },
      [503] = { "server_error", cjson.null },
      [504] = { "server_error", cjson.null },
    }
    for status, want in pairs(expected) do
      local e = cjson.decode(body(status, "m")).error
      assert.same(want, { e.type, e.code }, "status " .. status)
    end
  end)

  it("lets the caller override or null the code", function()
    assert.equal("custom", cjson.decode(body(404, "m", nil, "custom")).error.code)
    assert.equal(cjson.null, cjson.decode(body(404, "Invalid URL", nil, false)).error.code)
    assert.equal("upstream_down", cjson.decode(body(503, "m", nil, "upstream_down")).error.code)
  end)

  it("escapes quotes, backslashes and control characters", function()
    local message = 'a "q" \\ b\n\r\t\b\f\0\1\31\127 end'
    local text = body(400, message, 'p"\\')
    assert.truthy(text:find('"a \\"q\\" \\\\ b\\n\\r\\t\\b\\f\\u0000\\u0001\\u001f\127 end"', 1, true))
    local e = cjson.decode(text).error
    assert.equal(message, e.message)
    assert.equal('p"\\', e.param)
  end)

  it("does not escape slashes", function()
    local text = body(404, "The model `Qwen/Qwen2.5-72B` does not exist", "model")
    assert.is_nil(text:find("\\/", 1, true))
    assert.truthy(text:find("Qwen/Qwen2.5-72B", 1, true))
  end)

  it("keeps valid UTF-8 and replaces invalid bytes with U+FFFD", function()
    local valid = "caf\195\169 \226\130\172 \240\159\152\128"
    assert.equal(valid, cjson.decode(body(400, valid)).error.message)
    local cases = {
      { "a\255b", "a\239\191\189b" },
      { "\192\175", "\239\191\189\239\191\189" }, -- overlong "/"
      { "\237\160\128", "\239\191\189\239\191\189\239\191\189" }, -- UTF-16 surrogate
      { "x\226\130", "x\239\191\189\239\191\189" }, -- truncated sequence
      { "\244\144\128\128", "\239\191\189\239\191\189\239\191\189\239\191\189" }, -- > U+10FFFF
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], cjson.decode(body(400, c[1])).error.message)
    end
  end)
end)
