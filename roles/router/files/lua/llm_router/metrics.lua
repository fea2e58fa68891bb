-- Prometheus counters: requests by model and status, and an upstream latency histogram by model.
-- Each worker counts in a Lua table and adds its counts to the llm_metrics shared dict once a
-- second (and when it exits): a dict increment per request cost more than the rest of the log
-- phase. /metrics walks the dict, so another worker's requests show up there within a second.
local ngx = ngx
local shared = ngx.shared.llm_metrics
local timer_every = ngx.timer.every
local ipairs = ipairs
local pairs = pairs
local setmetatable = setmetatable
local concat = table.concat
local sort = table.sort
local format = string.format
local tostring = tostring
local match = string.match

local _M = {}

local FLUSH_SECONDS = 1

-- Seconds; LLM requests range from a tokenize call to minutes of generation.
local buckets = { 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 }

-- Per request: one counter, and for proxied requests the one bucket the time falls in plus the
-- sum; render() makes the buckets cumulative. The dict keys are built once per model (and status)
-- and kept in worker-local tables: string concatenation on every request cost more than counting.
local function key_table(build)
    return setmetatable({}, { __index = function(keys, model)
        local by_model = build(model)
        keys[model] = by_model
        return by_model
    end })
end
local request_keys = key_table(function(model)
    return setmetatable({}, { __index = function(keys, status)
        local key = "req\t" .. model .. "\t" .. status
        keys[status] = key
        return key
    end })
end)
local bucket_keys = key_table(function(model)
    local keys = { [0] = "lat\t" .. model .. "\t+Inf" }
    for i, le in ipairs(buckets) do
        keys[i] = "lat\t" .. model .. "\t" .. le
    end
    return keys
end)
local sum_keys = key_table(function(model)
    return "latsum\t" .. model
end)

-- This worker's counts not yet in the dict: dict key -> amount. Keys stay once seen (a few per
-- model and status), so that counting never grows the table.
local pending = {}

function _M.observe(model, status, upstream_seconds)
    local key = request_keys[model][status]
    pending[key] = (pending[key] or 0) + 1
    if upstream_seconds then
        local bucket = 0
        for i = 1, #buckets do
            if upstream_seconds <= buckets[i] then
                bucket = i
                break
            end
        end
        key = bucket_keys[model][bucket]
        pending[key] = (pending[key] or 0) + 1
        key = sum_keys[model]
        pending[key] = (pending[key] or 0) + upstream_seconds
    end
end

function _M.flush()
    for key, amount in pairs(pending) do
        if amount ~= 0 then
            local _, err = shared:incr(key, amount, 0)
            if err then
                ngx.log(ngx.ERR, "metrics: cannot count ", key, ": ", err)
            end
            pending[key] = 0
        end
    end
end

-- init_worker: every worker flushes its own counts; a worker that exits flushes once more
-- (the timer then runs with premature set).
function _M.start()
    local ok, err = timer_every(FLUSH_SECONDS, _M.flush)
    if not ok then
        ngx.log(ngx.ERR, "cannot start the metrics timer: ", err)
    end
end

function _M.render(models, health)
    _M.flush()
    local lines = {
        "# HELP llm_router_requests_total Requests answered, by model and status.",
        "# TYPE llm_router_requests_total counter",
    }
    local keys = shared:get_keys(0)
    sort(keys)
    local latency, sums = {}, {}
    for _, key in ipairs(keys) do
        local kind, model, label = match(key, "^(%a+)\t([^\t]*)\t?(.*)$")
        local value = shared:get(key)
        if kind == "req" then
            lines[#lines + 1] = format('llm_router_requests_total{model="%s",status="%s"} %d', model, label, value)
        elseif kind == "lat" then
            latency[model] = latency[model] or {}
            latency[model][label] = value
        elseif kind == "latsum" then
            sums[model] = value
        end
    end
    lines[#lines + 1] = "# HELP llm_router_upstream_seconds Time to the backend's full answer."
    lines[#lines + 1] = "# TYPE llm_router_upstream_seconds histogram"
    for model, counts in pairs(latency) do
        local total = 0
        for _, le in ipairs(buckets) do
            total = total + (counts[tostring(le)] or 0)
            lines[#lines + 1] = format('llm_router_upstream_seconds_bucket{model="%s",le="%s"} %d',
                model, tostring(le), total)
        end
        total = total + (counts["+Inf"] or 0)
        lines[#lines + 1] = format('llm_router_upstream_seconds_bucket{model="%s",le="+Inf"} %d', model, total)
        lines[#lines + 1] = format('llm_router_upstream_seconds_sum{model="%s"} %.6f', model, sums[model] or 0)
        lines[#lines + 1] = format('llm_router_upstream_seconds_count{model="%s"} %d', model, total)
    end
    lines[#lines + 1] = "# HELP llm_router_backend_ready 1 when the backend answers /health, else 0."
    lines[#lines + 1] = "# TYPE llm_router_backend_ready gauge"
    for _, model in ipairs(models) do
        for _, backend in ipairs(model.backends) do
            lines[#lines + 1] = format('llm_router_backend_ready{model="%s",backend="%s"} %d', model.key,
                backend.id, health.backend_ready(backend) and 1 or 0)
        end
    end
    lines[#lines + 1] = "# HELP llm_router_backend_in_flight Requests in flight, for models with several backends."
    lines[#lines + 1] = "# TYPE llm_router_backend_in_flight gauge"
    for _, model in ipairs(models) do
        if #model.backends > 1 then
            for _, backend in ipairs(model.backends) do
                lines[#lines + 1] = format('llm_router_backend_in_flight{model="%s",backend="%s"} %d', model.key,
                    backend.id, health.busy(backend))
            end
        end
    end
    return concat(lines, "\n") .. "\n"
end

return _M
