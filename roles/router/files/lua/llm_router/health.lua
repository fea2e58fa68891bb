-- Backend readiness, shared by all workers through the llm_router shared dict. One worker polls
-- every backend's /health on a timer; requests only read the dict, so a down backend costs a
-- request one dict lookup instead of a connect timeout.
local ngx = ngx
local shared = ngx.shared.llm_router
local tcp = ngx.socket.tcp
local timer_every = ngx.timer.every
local timer_at = ngx.timer.at
local ipairs = ipairs
local setmetatable = setmetatable
local tostring = tostring
local tonumber = tonumber
local match = string.match

local _M = {}

local models = {}
local interval, timeout_ms = 1, 1000

function _M.configure(config)
    models = config.models
    interval = tonumber(config.health_interval) or 1
    timeout_ms = (tonumber(config.health_timeout) or 1) * 1000
end

-- One HTTP/1.0 GET; returns status, body or nil, err. HTTP/1.0 makes vLLM close the connection
-- and send no chunked encoding, so reading to the end is the whole body.
local function get(model, path)
    local sock = tcp()
    sock:settimeouts(timeout_ms, timeout_ms, timeout_ms)
    local ok, err = sock:connect(model.host, model.port)
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    ok, err = sock:send("GET " .. path .. " HTTP/1.0\r\nHost: " .. model.host .. "\r\nAccept: application/json\r\n\r\n")
    if not ok then
        sock:close()
        return nil, "send: " .. tostring(err)
    end
    local response
    response, err = sock:receive("*a")
    sock:close()
    if not response then
        return nil, "receive: " .. tostring(err)
    end
    local status = tonumber(match(response, "^HTTP/%d%.%d (%d%d%d)"))
    if not status then
        return nil, "not an HTTP response"
    end
    local body = match(response, "\r\n\r\n(.*)$") or ""
    return status, body
end

local function set_state(key, state, detail)
    local previous = shared:get("state:" .. key)
    shared:set("state:" .. key, state)
    if previous ~= state then
        ngx.log(state == "ready" and ngx.NOTICE or ngx.WARN, "backend ", key, " is ", state,
            detail and (" (" .. detail .. ")") or "")
    end
    return previous
end

local function probe(model)
    local status, err = get(model, "/health")
    if status ~= 200 then
        set_state(model.key, "down", err or ("/health answered " .. tostring(status)))
        return
    end
    -- The model list changes only when the backend restarts: fetch it when it becomes ready.
    if shared:get("state:" .. model.key) ~= "ready" or not shared:get("models:" .. model.key) then
        local code, body = get(model, "/v1/models")
        if code ~= 200 then
            set_state(model.key, "down", "/v1/models answered " .. tostring(code or body))
            return
        end
        shared:set("models:" .. model.key, body)
    end
    set_state(model.key, "ready")
end

local function poll(premature)
    if premature then
        return
    end
    for _, model in ipairs(models) do
        probe(model)
    end
end

function _M.start()
    if ngx.worker.id() ~= 0 then
        return
    end
    local ok, err = timer_at(0, poll)
    if ok then
        ok, err = timer_every(interval, poll)
    end
    if not ok then
        ngx.log(ngx.ERR, "cannot start the backend health timer: ", err)
    end
end

function _M.state(key)
    return shared:get("state:" .. key) or "unknown"
end

-- Per request: the dict key is built once per model, not concatenated on every call.
local state_keys = setmetatable({}, { __index = function(keys, key)
    local state_key = "state:" .. key
    keys[key] = state_key
    return state_key
end })

function _M.is_ready(key)
    return shared:get(state_keys[key]) == "ready"
end

function _M.mark_down(key, reason)
    set_state(key, "down", reason)
end

function _M.models_body(key)
    return shared:get("models:" .. key)
end

return _M
