-- Backend readiness, shared by all workers through the llm_router shared dict. One worker polls
-- every backend's /health on a timer (the backends in parallel); requests only read the dict, so
-- a down backend costs a request one dict lookup instead of a connect timeout. A model is ready
-- while at least one of its backends is.
-- A backend can be drained (/drain, before its model server stops): it gets no new request while
-- it still answers /health, and the drain ends when it stops answering or when the drain expires.
local ngx = ngx
local shared = ngx.shared.llm_router
local tcp = ngx.socket.tcp
local spawn = ngx.thread.spawn
local wait = ngx.thread.wait
local timer_every = ngx.timer.every
local timer_at = ngx.timer.at
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local match = string.match
local pcall = pcall
local probe_verdict = require "llm_router.probe_verdict"

local _M = {}

local models = {}
-- backend id ("host:port") -> { { model, backend }, ... }: one server can serve several models.
local by_id = {}
local interval, timeout_ms, fails = 1, 1000, 3
-- Probes timed out in a row, per backend; only the polling worker counts.
local timeouts = {}
-- A poll that outlasts the interval (probes waiting for their timeout) makes the next tick wait.
local polling = false

-- config.models[i].backends = { { host = "10.0.0.2", port = 8011 }, ... }. The dict keys of
-- each backend are built here once, not per request.
function _M.configure(config)
    models = config.models
    interval = tonumber(config.health_interval) or 1
    timeout_ms = (tonumber(config.health_timeout) or 1) * 1000
    fails = tonumber(config.health_fails) or 3
    by_id = {}
    for _, model in ipairs(models) do
        model.state_key = "state:" .. model.key
        model.models_key = "models:" .. model.key
        for _, backend in ipairs(model.backends) do
            backend.id = backend.host .. ":" .. backend.port
            backend.state_key = "state:" .. model.key .. "@" .. backend.id
            backend.models_key = "models:" .. model.key .. "@" .. backend.id
            backend.busy_key = "busy:" .. model.key .. "@" .. backend.id
            backend.drain_key = "drain:" .. model.key .. "@" .. backend.id
            local serving = by_id[backend.id] or {}
            serving[#serving + 1] = { model = model, backend = backend }
            by_id[backend.id] = serving
        end
    end
end

-- One HTTP/1.0 GET; returns status, body or nil, err. HTTP/1.0 makes vLLM close the connection
-- and send no chunked encoding, so reading to the end is the whole body.
local function get(backend, path)
    local sock = tcp()
    sock:settimeouts(timeout_ms, timeout_ms, timeout_ms)
    local ok, err = sock:connect(backend.host, backend.port)
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    ok, err = sock:send("GET " .. path .. " HTTP/1.0\r\nHost: " .. backend.id .. "\r\nAccept: application/json\r\n\r\n")
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

local function set_state(dict_key, name, state, detail)
    local previous = shared:get(dict_key)
    shared:set(dict_key, state)
    if previous ~= state then
        ngx.log(state == "ready" and ngx.NOTICE or ngx.WARN, "backend ", name, " is ", state,
            detail and (" (" .. detail .. ")") or "")
    end
    return previous
end

local function probe(model, backend)
    local name = model.key .. "@" .. backend.id
    local status, err = get(backend, "/health")
    -- Read after the probe's I/O, so a drain that came meanwhile counts.
    local verdict
    verdict, timeouts[backend] = probe_verdict.judge(status, err, timeouts[backend] or 0, fails,
        shared:get(backend.drain_key))
    if verdict == "keep" then
        ngx.log(ngx.WARN, "backend ", name, ": /health ", err, " (", timeouts[backend], " in a row; down at ",
            fails, ")")
        return
    end
    if verdict == "draining" then
        set_state(backend.state_key, name, "draining")
        return
    end
    if verdict == "down" then
        shared:delete(backend.drain_key)
        set_state(backend.state_key, name, "down", err or ("/health answered " .. tostring(status)))
        return
    end
    -- The model list changes only when the backend restarts: fetch it when it becomes ready.
    if shared:get(backend.state_key) ~= "ready" or not shared:get(backend.models_key) then
        local code, body = get(backend, "/v1/models")
        if code ~= 200 then
            set_state(backend.state_key, name, "down", "/v1/models answered " .. tostring(code or body))
            return
        end
        shared:set(backend.models_key, body)
    end
    set_state(backend.state_key, name, "ready")
    -- A drain from another worker between the verdict and here (no yield between them, but the
    -- workers run in parallel) must not be undone.
    if shared:get(backend.drain_key) then
        set_state(backend.state_key, name, "draining")
    end
end

-- The model's state and /v1/models entry follow its first ready backend.
local function settle(model)
    for _, backend in ipairs(model.backends) do
        if shared:get(backend.state_key) == "ready" then
            shared:set(model.models_key, shared:get(backend.models_key))
            set_state(model.state_key, model.key, "ready")
            return
        end
    end
    set_state(model.state_key, model.key, "down")
end

local function poll_once()
    local threads = {}
    for _, model in ipairs(models) do
        for _, backend in ipairs(model.backends) do
            threads[#threads + 1] = spawn(probe, model, backend)
        end
    end
    for _, thread in ipairs(threads) do
        wait(thread)
    end
    for _, model in ipairs(models) do
        settle(model)
    end
end

local function poll(premature)
    if premature or polling then
        return
    end
    polling = true
    local ok, err = pcall(poll_once)
    polling = false
    if not ok then
        ngx.log(ngx.ERR, "backend health poll failed: ", err)
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

function _M.state(model)
    return shared:get(model.state_key) or "unknown"
end

function _M.backend_state(backend)
    return shared:get(backend.state_key) or "unknown"
end

function _M.is_ready(model)
    return shared:get(model.state_key) == "ready"
end

function _M.backend_ready(backend)
    return shared:get(backend.state_key) == "ready"
end

-- A proxy error says more than the last probe: the backend (or, when unknown, every backend of
-- the model) is down until a probe finds it ready again.
function _M.mark_down(model, backend, reason)
    local backends = backend and { backend } or model.backends
    for _, each in ipairs(backends) do
        set_state(each.state_key, model.key .. "@" .. each.id, "down", reason)
    end
    settle(model)
end

-- Drains every backend with this id ("host:port") for `seconds` at most: returns how many (0 when
-- the id is unknown).
function _M.drain(id, seconds)
    local serving = by_id[id] or {}
    for _, each in ipairs(serving) do
        shared:set(each.backend.drain_key, true, seconds)
        set_state(each.backend.state_key, each.model.key .. "@" .. id, "draining",
            "drained for " .. seconds .. " s at most")
        settle(each.model)
    end
    return #serving
end

-- Ends the drain of every backend with this id; the next probe takes them back.
function _M.undrain(id)
    local serving = by_id[id] or {}
    for _, each in ipairs(serving) do
        shared:delete(each.backend.drain_key)
    end
    return #serving
end

-- In-flight requests per backend, for least_busy; the log phase gives back what balance took.
function _M.busy(backend)
    return shared:get(backend.busy_key) or 0
end

function _M.take(backend)
    shared:incr(backend.busy_key, 1, 0)
end

function _M.give_back(backend)
    local left = shared:incr(backend.busy_key, -1, 0)
    if left and left < 0 then
        shared:set(backend.busy_key, 0)
    end
end

function _M.models_body(model)
    return shared:get(model.models_key)
end

return _M
