-- Which backend a /drain request names. A model server's host names its own server by port (the
-- router knows it by the address the request comes from), so a backend host can drain only its
-- own servers; this host (loopback) may name any backend as host:port.
local tonumber = tonumber
local find = string.find
local match = string.match

local _M = {}

local function loopback(client)
    return client == "::1" or find(client, "^127%.") ~= nil
end

-- backend, port: the query's arguments (nil when absent); client: the request's address. Returns
-- the backend id ("host:port"), or nil, the status, the error code and the message.
function _M.resolve(backend, port, client)
    if backend ~= nil and port ~= nil then
        return nil, 400, "invalid_backend", "Give backend or port, not both."
    end
    if port ~= nil then
        local number = match(type(port) == "string" and port or "", "^%d+$") and tonumber(port)
        if not number or number < 1 or number > 65535 then
            return nil, 400, "invalid_backend", "port must be a TCP port, 1 to 65535."
        end
        return client .. ":" .. number
    end
    if type(backend) ~= "string" or backend == "" then
        return nil, 400, "missing_backend",
            "Name the backend: /drain?port=<port> for a server on the calling host, or, from this host, "
            .. "/drain?backend=<host:port>."
    end
    if not loopback(client) then
        return nil, 403, "drain_forbidden",
            "Only this host may drain another host's backend; a backend host drains its own servers with "
            .. "/drain?port=<port>."
    end
    return backend
end

return _M
