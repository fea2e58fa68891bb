package.path = "roles/router/files/lua/?.lua;" .. package.path

local cjson = require("cjson")
local json_list = require("llm_router.json_list")

local models_body = json_list.models_body

local QWEN = '{"object":"list","data":[{"id":"Qwen/Qwen2.5-72B-Instruct-AWQ","object":"model",'
  .. '"created":1735000000,"owned_by":"vllm","root":"/models/qwen","parent":null,'
  .. '"permission":[{"id":"modelperm-1","object":"model_permission","group":null}]}]}'
local LLAMA = '{ "object" : "list", "data" : [\n'
  .. '  {"id":"meta-llama/Llama-3.3-70B-Instruct","object":"model","extra":{}},\n'
  .. '  {"id":"llama-alias","object":"model","extra":[]}\n ] }\n'

describe("json_list.models_body", function()
  it("merges the data of two backends in order", function()
    local text, bad = models_body({ QWEN, LLAMA })
    assert.same({}, bad)
    local merged = cjson.decode(text)
    assert.equal("list", merged.object)
    local ids = {}
    for i, m in ipairs(merged.data) do
      ids[i] = m.id
    end
    assert.same({ "Qwen/Qwen2.5-72B-Instruct-AWQ", "meta-llama/Llama-3.3-70B-Instruct", "llama-alias" }, ids)
  end)

  it("splices elements byte for byte", function()
    local text = models_body({ QWEN, LLAMA })
    assert.equal(
      '{"object":"list","data":[{"id":"Qwen/Qwen2.5-72B-Instruct-AWQ","object":"model",'
        .. '"created":1735000000,"owned_by":"vllm","root":"/models/qwen","parent":null,'
        .. '"permission":[{"id":"modelperm-1","object":"model_permission","group":null}]},'
        .. '{"id":"meta-llama/Llama-3.3-70B-Instruct","object":"model","extra":{}},\n'
        .. '  {"id":"llama-alias","object":"model","extra":[]}]}',
      text
    )
    assert.is_nil(text:find("\\/", 1, true))
  end)

  it("skips malformed bodies and reports their indexes", function()
    local bodies = {
      QWEN,
      '{"object":"list","data":[{"id":"x"}',
      "<html>502 Bad Gateway</html>",
      '{"object":"list","data":{"id":"x"}}',
      '{"object":"list"}',
      '[{"id":"x"}]',
      false,
      LLAMA,
    }
    local text, bad = models_body(bodies)
    assert.same({ 2, 3, 4, 5, 6, 7 }, bad)
    assert.equal(3, #cjson.decode(text).data)
  end)

  it("handles empty data arrays", function()
    local text, bad = models_body({ '{"data":[]}', '{"data":[ \n ]}', QWEN, '{"data":[]}' })
    assert.same({}, bad)
    assert.equal(1, #cjson.decode(text).data)
    assert.equal('{"object":"list","data":[]}', (models_body({ '{"data":[]}', '{"data":[ ]}' })))
    assert.equal('{"object":"list","data":[]}', (models_body({})))
  end)

  it("uses the top-level data, not a nested one", function()
    local text = models_body({ '{"meta":{"data":[1]},"data":[{"id":"a/b"}]}' })
    assert.equal('{"object":"list","data":[{"id":"a/b"}]}', text)
  end)
end)
