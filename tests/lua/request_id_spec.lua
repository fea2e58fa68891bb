local request_id = require "llm_router.request_id"

describe("request_id", function()
    local function bytes_of(value)
        return function(n) return string.rep(string.char(value), n) end
    end

    it("gives 32 hex digits, as nginx's $request_id", function()
        request_id.start()
        assert.matches("^%x+$", request_id.next())
        assert.are.equal(32, #request_id.next())
    end)

    it("never repeats an id in a row of requests", function()
        request_id.start()
        local seen = {}
        for _ = 1, 10000 do
            local id = request_id.next()
            assert.is_nil(seen[id])
            seen[id] = true
        end
    end)

    it("puts the worker's random prefix before a counter", function()
        request_id.start(bytes_of(0xab))
        assert.are.equal(string.rep("ab", 12) .. "00000001", request_id.next())
        assert.are.equal(string.rep("ab", 12) .. "00000002", request_id.next())
    end)

    it("draws a new prefix when the counter wraps", function()
        local draws = 0
        request_id.start(function(n)
            draws = draws + 1
            return string.rep(string.char(draws), n)
        end, 4294967294)
        assert.are.equal(string.rep("01", 12) .. "ffffffff", request_id.next())
        assert.are.equal(string.rep("02", 12) .. "00000001", request_id.next())
    end)

    it("stops the worker's start with the reason when no random bytes can be read", function()
        assert.has_error(function()
            request_id.start(function() return nil, "no entropy" end)
        end, "llm_router: cannot draw a request id prefix: no entropy")
    end)
end)
