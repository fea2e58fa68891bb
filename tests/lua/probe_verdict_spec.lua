local probe_verdict = require "llm_router.probe_verdict"

describe("probe_verdict.judge", function()
    it("finds a backend that answers 200 ready, and forgets earlier timeouts", function()
        assert.are.same({ "ready", 0 }, { probe_verdict.judge(200, nil, 2, 3) })
    end)

    it("keeps a backend as it is until the timeouts in a row reach the limit", function()
        assert.are.same({ "keep", 1 }, { probe_verdict.judge(nil, "receive: timeout", 0, 3) })
        assert.are.same({ "keep", 2 }, { probe_verdict.judge(nil, "connect: timeout", 1, 3) })
        assert.are.same({ "down", 3 }, { probe_verdict.judge(nil, "receive: timeout", 2, 3) })
        assert.are.same({ "down", 4 }, { probe_verdict.judge(nil, "receive: timeout", 3, 3) })
    end)

    it("marks down on the first timeout when the limit is 1", function()
        assert.are.same({ "down", 1 }, { probe_verdict.judge(nil, "receive: timeout", 0, 1) })
    end)

    it("marks down at once on a refused connection or an error status", function()
        assert.are.same({ "down", 0 }, { probe_verdict.judge(nil, "connect: connection refused", 2, 3) })
        assert.are.same({ "down", 0 }, { probe_verdict.judge(503, nil, 0, 3) })
        assert.are.same({ "down", 0 }, { probe_verdict.judge(500, nil, 1, 3) })
        assert.are.same({ "down", 0 }, { probe_verdict.judge(nil, "not an HTTP response", 0, 3) })
    end)

    it("keeps a drained backend out while it still answers, and down once it does not", function()
        assert.are.same({ "draining", 0 }, { probe_verdict.judge(200, nil, 1, 3, true) })
        assert.are.same({ "down", 0 }, { probe_verdict.judge(nil, "connect: connection refused", 0, 3, true) })
        assert.are.same({ "keep", 1 }, { probe_verdict.judge(nil, "receive: timeout", 0, 3, true) })
    end)
end)
