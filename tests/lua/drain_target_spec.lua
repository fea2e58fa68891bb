package.path = "roles/router/files/lua/?.lua;" .. package.path
local drain_target = require "llm_router.drain_target"

describe("drain_target.resolve", function()
    it("names the calling host's server by port", function()
        assert.are.equal("10.0.0.11:8011", drain_target.resolve(nil, "8011", "10.0.0.11"))
        assert.are.equal("127.0.0.1:8012", drain_target.resolve(nil, "8012", "127.0.0.1"))
    end)

    it("lets this host name any backend", function()
        assert.are.equal("10.0.0.12:8011", drain_target.resolve("10.0.0.12:8011", nil, "127.0.0.1"))
        assert.are.equal("10.0.0.12:8011", drain_target.resolve("10.0.0.12:8011", nil, "::1"))
    end)

    it("refuses another host naming a backend", function()
        local id, status, code = drain_target.resolve("10.0.0.12:8011", nil, "10.0.0.11")
        assert.is_nil(id)
        assert.are.same({ 403, "drain_forbidden" }, { status, code })
    end)

    it("refuses a missing, doubled or malformed target", function()
        local _, status, code = drain_target.resolve(nil, nil, "127.0.0.1")
        assert.are.same({ 400, "missing_backend" }, { status, code })
        _, status, code = drain_target.resolve("", nil, "127.0.0.1")
        assert.are.same({ 400, "missing_backend" }, { status, code })
        _, status, code = drain_target.resolve("10.0.0.12:8011", "8011", "127.0.0.1")
        assert.are.same({ 400, "invalid_backend" }, { status, code })
        for _, port in ipairs({ "0", "65536", "80a", "-1", "" }) do
            _, status, code = drain_target.resolve(nil, port, "127.0.0.1")
            assert.are.same({ 400, "invalid_backend" }, { status, code }, port)
        end
        _, status = drain_target.resolve(nil, { "1", "2" }, "127.0.0.1")
        assert.are.equal(400, status)
    end)
end)
