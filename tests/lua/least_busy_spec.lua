local least_busy = require "llm_router.least_busy"

describe("least_busy.pick", function()
    local a, b, c = { id = "a" }, { id = "b" }, { id = "c" }
    local backends = { a, b, c }
    local function ready_all() return true end
    local function loads(map) return function(backend) return map[backend.id] or 0 end end

    it("picks the backend with the fewest requests in flight", function()
        local chosen, index = least_busy.pick(backends, ready_all, loads({ a = 3, b = 1, c = 2 }), 1)
        assert.are.equal(b, chosen)
        assert.are.equal(2, index)
    end)

    it("breaks ties from the start index, wrapping around", function()
        local idle = loads({})
        assert.are.equal(a, (least_busy.pick(backends, ready_all, idle, 1)))
        assert.are.equal(b, (least_busy.pick(backends, ready_all, idle, 2)))
        assert.are.equal(c, (least_busy.pick(backends, ready_all, idle, 3)))
    end)

    it("skips backends that are not ready, however idle", function()
        local function ready(backend) return backend ~= b end
        assert.are.equal(c, (least_busy.pick(backends, ready, loads({ a = 5, b = 0, c = 4 }), 1)))
    end)

    it("skips backends already tried for this request", function()
        local tried = { [a] = true, [b] = true }
        assert.are.equal(c, (least_busy.pick(backends, ready_all, loads({ a = 0, b = 1, c = 2 }), 1, tried)))
    end)

    it("returns nil when no ready backend is left", function()
        local function none() return false end
        assert.is_nil(least_busy.pick(backends, none, loads({}), 1))
        assert.is_nil(least_busy.pick({ a }, ready_all, loads({}), 1, { [a] = true }))
    end)
end)
