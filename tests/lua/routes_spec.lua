package.path = "roles/router/files/lua/?.lua;" .. package.path

local routes = require("llm_router.routes")

local QWEN = {
  key = "qwen",
  served_names = { "Qwen/Qwen2.5-72B-Instruct-AWQ", "qwen" },
  route_matches = { "qwen" },
  upstream = "vllm_qwen",
}
local QWEN_CODER = {
  key = "qwen_coder",
  served_names = { "Qwen/Qwen2.5-Coder-32B-Instruct" },
  route_matches = { "qwen-coder", "coder" },
  upstream = "vllm_qwen_coder",
}
local LLAMA = {
  key = "llama",
  served_names = { "meta-llama/Llama-3.3-70B-Instruct" },
  route_matches = { "llama" },
  upstream = "vllm_llama",
}
local GEMMA = { key = "gemma", served_names = { "google/gemma-3-27b-it" }, upstream = "vllm_gemma" }

describe("routes", function()
  local router = routes.new({ QWEN, QWEN_CODER, LLAMA, GEMMA })

  it("selects by exact served name first", function()
    assert.equal(QWEN_CODER, router:select("Qwen/Qwen2.5-Coder-32B-Instruct"))
    assert.equal(QWEN, router:select("qwen"))
    assert.equal(GEMMA, router:select("google/gemma-3-27b-it"))
  end)

  it("prefers an exact name over a longer substring match", function()
    local exact = { key = "a", served_names = { "coder-x" }, route_matches = {}, upstream = "u_a" }
    local r = routes.new({ QWEN_CODER, exact })
    assert.equal(exact, r:select("coder-x"))
    assert.equal(QWEN_CODER, r:select("Coder-X"))
  end)

  it("tells an exact served name from a route match", function()
    assert.same({ QWEN, true }, { router:select("qwen") })
    assert.same({ QWEN, false }, { router:select("my-QWEN-alias") })
    assert.same({}, { router:select("mistral") })
  end)

  it("matches substrings case-insensitively", function()
    assert.equal(LLAMA, router:select("LLaMA-3-8B"))
    assert.equal(QWEN, router:select("my-QWEN-alias"))
  end)

  it("picks the longest matching substring", function()
    assert.equal(QWEN_CODER, router:select("qwen-coder-7b"))
    assert.equal(QWEN, router:select("qwen-7b"))
    -- Order in the catalog does not matter, only the length.
    local reversed = routes.new({ QWEN_CODER, QWEN })
    assert.equal(QWEN_CODER, reversed:select("QWEN-CODER"))
  end)

  it("breaks length ties by catalog order", function()
    local a = { key = "a", served_names = { "a" }, route_matches = { "xx" }, upstream = "u_a" }
    local b = { key = "b", served_names = { "b" }, route_matches = { "yy" }, upstream = "u_b" }
    assert.equal(a, routes.new({ a, b }):select("yy-xx"))
    assert.equal(b, routes.new({ b, a }):select("yy-xx"))
  end)

  it("returns nil when nothing matches", function()
    assert.is_nil(router:select("mistral"))
    assert.is_nil(router:select(""))
    -- Served names are matched exactly, never as substrings.
    assert.is_nil(router:select("google/gemma-3-27b-it-v2"))
    assert.is_nil(router:select("GOOGLE/GEMMA-3-27B-IT"))
  end)

  it("lists served names in catalog order", function()
    assert.same({
      "Qwen/Qwen2.5-72B-Instruct-AWQ",
      "qwen",
      "Qwen/Qwen2.5-Coder-32B-Instruct",
      "meta-llama/Llama-3.3-70B-Instruct",
      "google/gemma-3-27b-it",
    }, router:names())
  end)

  it("returns a copy of the names", function()
    table.insert(router:names(), "extra")
    assert.equal(5, #router:names())
  end)

  it("rejects invalid catalogs", function()
    local bad = {
      "x",
      { "x" },
      { { served_names = { "a" }, upstream = "u" } },
      { { key = "a", served_names = { "a" } } },
      { { key = "a", served_names = {}, upstream = "u" } },
      { { key = "a", served_names = { "" }, upstream = "u" } },
      { { key = "a", served_names = { "a" }, route_matches = { "" }, upstream = "u" } },
      { { key = "a", served_names = { "a" }, route_matches = "a", upstream = "u" } },
      {
        { key = "a", served_names = { "same" }, upstream = "u" },
        { key = "b", served_names = { "same" }, upstream = "v" },
      },
    }
    for i, models in ipairs(bad) do
      assert.has_error(function()
        routes.new(models)
      end, nil, "case " .. i)
    end
  end)
end)
