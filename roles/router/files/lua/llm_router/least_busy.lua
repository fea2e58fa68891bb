-- Picks the backend for a request among several serving one model: the ready one with the
-- fewest requests in flight; ties go round-robin from `start`, so that one request at a time
-- still spreads over every backend. Pure: the caller passes readiness and load as functions.
local _M = {}

-- backends: array; is_ready(backend) -> bool; busy(backend) -> number; start: 1-based index to
-- begin the tie-breaking scan at; skip: optional set of backends already tried. Returns the
-- chosen backend and its index, or nil when no ready backend is left.
function _M.pick(backends, is_ready, busy, start, skip)
    local count = #backends
    local best, best_index, best_busy
    for offset = 0, count - 1 do
        local index = (start - 1 + offset) % count + 1
        local backend = backends[index]
        if not (skip and skip[backend]) and is_ready(backend) then
            local load = busy(backend)
            if not best or load < best_busy then
                best, best_index, best_busy = backend, index, load
            end
        end
    end
    return best, best_index
end

return _M
