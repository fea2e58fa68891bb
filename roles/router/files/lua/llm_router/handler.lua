-- The nginx glue of the model router: each function is one nginx phase or location.
-- Routing decisions live in the pure modules (model_field, routes); this file only reads the
-- request, asks them, and answers or hands over to proxy_pass.
local cjson = require "cjson.safe"
local balancer = require "ngx.balancer"
local model_field = require "llm_router.model_field"
local routes = require "llm_router.routes"
local openai_error = require "llm_router.openai_error"
local json_list = require "llm_router.json_list"
local health = require "llm_router.health"
local metrics = require "llm_router.metrics"
local least_busy = require "llm_router.least_busy"
local request_id = require "llm_router.request_id"
local drain_target = require "llm_router.drain_target"

local ngx = ngx
local io_open = io.open
local concat = table.concat
local ipairs = ipairs
local pairs = pairs
local error = error
local tostring = tostring
local tonumber = tonumber
local sub = string.sub
local match = string.match

local _M = {}

local config       -- config.json, read once in the master
local router       -- routes.new(config.models)
local by_key = {}  -- model key -> model entry of config.json
local api_keys     -- set of accepted keys, or nil when the check is off

local function read_file(path)
    local file, err = io_open(path, "rb")
    if not file then
        return nil, err
    end
    local data = file:read("*a")
    file:close()
    return data
end

local function load_api_keys(path)
    local text, err = read_file(path)
    if not text then
        return nil, err
    end
    local keys, count = {}, 0
    for line in text:gmatch("[^\r\n]+") do
        local key = match(line, "^%s*(.-)%s*$")
        if key ~= "" and sub(key, 1, 1) ~= "#" then
            keys[key] = true
            count = count + 1
        end
    end
    if count == 0 then
        return nil, path .. " holds no key"
    end
    return keys
end

-- init_by_lua: a broken configuration must stop nginx from starting, hence error().
function _M.init(config_path)
    local text, err = read_file(config_path)
    if not text then
        error("llm_router: cannot read " .. config_path .. ": " .. tostring(err))
    end
    config, err = cjson.decode(text)
    if not config then
        error("llm_router: " .. config_path .. " is not JSON: " .. tostring(err))
    end
    router = routes.new(config.models)
    for _, model in ipairs(config.models) do
        by_key[model.key] = model
    end
    if config.api_keys_file and config.api_keys_file ~= cjson.null then
        api_keys, err = load_api_keys(config.api_keys_file)
        if not api_keys then
            error("llm_router: API keys: " .. tostring(err))
        end
    end
    -- After health.configure, which names each backend (backend.id).
    health.configure(config)
    for _, model in ipairs(config.models) do
        model.balanced = #model.backends > 1
        model.next_backend = 1
        model.by_id = {}
        for _, backend in ipairs(model.backends) do
            model.by_id[backend.id] = backend
        end
    end
end

function _M.init_worker()
    request_id.start()
    metrics.start()
    health.start()
end

local function reply(status, body, headers)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    if headers then
        for name, value in pairs(headers) do
            ngx.header[name] = value
        end
    end
    ngx.print(body)
    return ngx.exit(status)
end

local function fail(status, message, param, code, headers)
    return reply(status, openai_error.body(status, message, param, code), headers)
end

local function unavailable(model)
    ngx.var.llm_model = model.key
    return fail(503, "The backend for model '" .. model.key .. "' is not ready yet; retry later.",
        nil, "backend_not_ready", { ["Retry-After"] = tostring(config.retry_after) })
end

local function check_api_key()
    if not api_keys then
        return true
    end
    local header = ngx.var.http_authorization
    local token = header and match(header, "^%s*[Bb]earer%s+(%S+)%s*$")
    if token and api_keys[token] then
        return true
    end
    fail(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'.", nil, "invalid_api_key")
    return false
end

-- Over client_body_buffer_size, nginx keeps the body in a temporary file only. It is scanned in
-- 64 KB chunks: one Lua string of a 20 MB body cost ~20 ms of page faults per request.
local CHUNK = 65536

local function model_in_file(path)
    local file, err = io_open(path, "rb")
    if not file then
        return nil, nil, err
    end
    local read_err
    local name, reason = model_field.find_chunked(function()
        local chunk, chunk_err = file:read(CHUNK)
        read_err = read_err or chunk_err
        return chunk
    end)
    file:close()
    if read_err then
        return nil, nil, read_err
    end
    return name, reason
end

local function unreadable_body(err)
    ngx.log(ngx.ERR, "cannot read the spilled request body: ", err)
    return fail(500, "The router could not read the request body.", nil, "internal_error")
end

local not_json_messages = {
    not_json = "The request body is not valid JSON.",
    not_object = "The request body must be a JSON object.",
    missing = "The request body has no 'model' field.",
    not_string = "The 'model' field must be a string.",
}

-- access_by_lua for POST /v1/*: pick the backend or answer the error.
function _M.access()
    -- First: every answer, the errors below included, carries the id.
    ngx.var.llm_lua_request_id = request_id.next()
    if ngx.req.get_method() ~= "POST" then
        return fail(405, "Use POST for " .. ngx.var.uri .. ".", nil, "method_not_allowed", { Allow = "POST" })
    end
    if not check_api_key() then
        return
    end
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    local path = not body and ngx.req.get_body_file()
    local name, first, last, err
    if path then
        name, first, err = model_in_file(path)
        if err then
            return unreadable_body(err)
        end
    else
        name, first, last = model_field.find(body or "")
    end
    if not name then
        return fail(400, not_json_messages[first] or not_json_messages.not_json, "model", first)
    end
    local model, exact = router:select(name)
    if not model then
        ngx.var.llm_model = "-"
        return fail(404, "The model '" .. name .. "' does not exist here. Available models: "
            .. concat(router:names(), ", ") .. ".", "model", "model_not_found")
    end
    ngx.var.llm_model = model.key
    if not health.is_ready(model) then
        return unavailable(model)
    end
    ngx.var.llm_upstream = model.upstream
    if model.balanced then
        ngx.ctx.model = model
    end
    -- vLLM answers 404 to any name it does not serve: a name picked by a route match is
    -- replaced by the model's served name, in place; the rest of the body stays byte for byte.
    if not exact and config.rewrite_model then
        if path then
            -- The one case that needs the spilled body as a string: an alias in a large body.
            body, err = read_file(path)
            if not body then
                return unreadable_body(err)
            end
            local _, body_first, body_last = model_field.find(body)
            first, last = body_first, body_last
        end
        ngx.req.set_body_data(sub(body, 1, first - 1) .. model.served_name_json .. sub(body, last + 1))
    end
end

-- balancer_by_lua of a model served by several backends: the ready one with the fewest requests
-- in flight. Called again when the connection failed (nginx never resends a POST it has sent):
-- that backend is marked down and the next ready one tried. With none left, NGX_BUSY makes nginx
-- answer 502 ("no live upstreams"), which @backend_down turns into a 503 after marking the last
-- backend tried down; any status code here would become a bare 500 instead.
local NGX_BUSY = -3

function _M.balance()
    local ctx = ngx.ctx
    local model = ctx.model
    local tried = ctx.tried
    if not tried then
        tried = {}
        ctx.tried = tried
    end
    local backend, index = least_busy.pick(model.backends, health.backend_ready, health.busy,
        model.next_backend, tried)
    if not backend then
        return ngx.exit(NGX_BUSY)
    end
    local failed = ctx.backend
    if failed then
        health.give_back(failed)
        local _, failure = balancer.get_last_failure()
        health.mark_down(model, failed, "proxy: " .. tostring(failure))
    end
    model.next_backend = index % #model.backends + 1
    tried[backend] = true
    ctx.backend = backend
    health.take(backend)
    local ok, err = balancer.set_current_peer(backend.host, backend.port)
    if not ok then
        ngx.log(ngx.ERR, "cannot use backend ", backend.id, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
    if not failed then
        balancer.set_more_tries(#model.backends - 1)
    end
end

-- error_page 502 504 of /v1/: the backend refused or dropped the connection before answering.
-- ngx.ctx is gone after this internal redirect; $upstream_addr names the backend that failed.
function _M.backend_down()
    local key = ngx.var.llm_model
    local model = by_key[key]
    if not model then
        return fail(502, "The backend failed.", nil, "bad_gateway")
    end
    local reason = "proxy: " .. tostring(ngx.var.upstream_status)
    if model.balanced then
        local last = match(ngx.var.upstream_addr or "", "([^%s,]+)$")
        local backend = last and model.by_id[last]
        if backend then
            health.give_back(backend)
            health.mark_down(model, backend, reason)
        end
    else
        health.mark_down(model, nil, reason)
    end
    return unavailable(model)
end

function _M.too_large()
    return fail(413, "The request body is larger than the router accepts (" .. config.max_body_size .. ").",
        nil, "request_too_large")
end

function _M.not_found()
    return fail(404, "Unknown path " .. ngx.var.uri .. "; the API lives under /v1/.", nil, "not_found")
end

-- GET /v1/models: the ready backends' own lists, merged without re-encoding.
function _M.models()
    if ngx.req.get_method() ~= "GET" then
        return fail(405, "Use GET for /v1/models.", nil, "method_not_allowed", { Allow = "GET" })
    end
    if not check_api_key() then
        return
    end
    local bodies = {}
    for _, model in ipairs(config.models) do
        if health.is_ready(model) then
            bodies[#bodies + 1] = health.models_body(model)
        end
    end
    if #bodies == 0 then
        return fail(503, "No backend is ready yet; retry later.", nil, "backend_not_ready",
            { ["Retry-After"] = tostring(config.retry_after) })
    end
    local merged, skipped = json_list.models_body(bodies)
    if skipped and #skipped > 0 then
        ngx.log(ngx.WARN, "skipped ", #skipped, " unreadable /v1/models answer(s)")
    end
    return reply(200, merged)
end

-- GET /health: 200 when every model of the profile has a ready backend, else 503; lists the
-- state of each model and of each of its backends.
function _M.health()
    local parts, backend_parts, all_ready = {}, {}, true
    for _, model in ipairs(config.models) do
        local state = health.state(model)
        all_ready = all_ready and state == "ready"
        parts[#parts + 1] = '"' .. model.key .. '":"' .. state .. '"'
        local states = {}
        for _, backend in ipairs(model.backends) do
            states[#states + 1] = '"' .. backend.id .. '":"' .. health.backend_state(backend) .. '"'
        end
        backend_parts[#backend_parts + 1] = '"' .. model.key .. '":{' .. concat(states, ",") .. "}"
    end
    local status = all_ready and 200 or 503
    return reply(status, '{"status":"' .. (all_ready and "ready" or "not_ready") .. '","models":{'
        .. concat(parts, ",") .. '},"backends":{' .. concat(backend_parts, ",") .. "}}\n")
end

function _M.metrics()
    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx.print(metrics.render(config.models, health))
end

-- /drain?port=<port> (a server on the calling host) or, from this host, /drain?backend=<host:port>;
-- &seconds=N optional. Only from loopback and the backend hosts. POST: the backend gets
-- no new request (its model server is about to stop; vllm-drain calls this before the stop) until
-- it stops answering /health, or for N seconds at most. DELETE: the drain ends now.
local DRAIN_SECONDS = 600

function _M.drain()
    local method = ngx.req.get_method()
    if method ~= "POST" and method ~= "DELETE" then
        return fail(405, "Use POST to drain a backend, DELETE to end its drain.", nil, "method_not_allowed",
            { Allow = "POST, DELETE" })
    end
    local args = ngx.req.get_uri_args()
    local id, status, code, message = drain_target.resolve(args.backend, args.port, ngx.var.remote_addr)
    if not id then
        return fail(status, message, "backend", code)
    end
    local seconds = DRAIN_SECONDS
    if args.seconds ~= nil then
        seconds = tonumber(args.seconds)
        if not seconds or seconds <= 0 then
            return fail(400, "seconds must be a number above 0.", "seconds", "invalid_seconds")
        end
    end
    local count
    if method == "POST" then
        count = health.drain(id, seconds)
    else
        count = health.undrain(id)
    end
    if count == 0 then
        local ids, seen = {}, {}
        for _, model in ipairs(config.models) do
            for _, backend in ipairs(model.backends) do
                if not seen[backend.id] then
                    seen[backend.id] = true
                    ids[#ids + 1] = backend.id
                end
            end
        end
        return fail(404, "No backend " .. id .. " here. Backends: " .. concat(ids, ", ") .. ".", "backend",
            "backend_not_found")
    end
    ngx.log(ngx.NOTICE, method == "POST" and "draining backend " or "drain ended for backend ", id)
    return reply(200, cjson.encode({ backend = id, draining = method == "POST", models = count }))
end

-- log_by_lua of /v1/: count the request (in this worker's tables, see metrics.lua) and give back
-- the balanced backend's in-flight slot.
function _M.log()
    local key = ngx.var.llm_model
    if key == nil or key == "" then
        key = "-"
    end
    metrics.observe(key, ngx.status, tonumber(ngx.var.upstream_response_time))
    local model = by_key[key]
    if model and model.balanced then
        local backend = ngx.ctx.backend
        if backend then
            health.give_back(backend)
        end
    end
end

return _M
