-- What one health probe makes of a backend. A probe that timed out counts against a backend only
-- from the `fails`-th in a row: vLLM busy with a full batch can answer /health late without being
-- down, and marking it down on one late answer would turn every request for its model into a 503
-- until the next probe. A refused connection or an error status is certain: down at once.
-- A backend being drained (its model server is about to stop) stays out of routing while it still
-- answers; once it stops answering it is down, and the drain is over.
local find = string.find

local _M = {}

-- status: the HTTP status of /health, or nil with err saying why there is none. timeouts: probes
-- timed out in a row before this one. draining: the backend is being drained. Returns the
-- verdict, "ready", "draining", "down" or "keep" (the backend stays as it is), and the new count
-- of timeouts in a row.
function _M.judge(status, err, timeouts, fails, draining)
    if status == 200 then
        return draining and "draining" or "ready", 0
    end
    if status == nil and err and find(err, "timeout", 1, true) then
        timeouts = timeouts + 1
        if timeouts < fails then
            return "keep", timeouts
        end
        return "down", timeouts
    end
    return "down", 0
end

return _M
