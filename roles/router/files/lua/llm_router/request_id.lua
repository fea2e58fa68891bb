-- Request ids for requests that come without X-Request-Id: 32 hex digits, as nginx's
-- $request_id, made of a random prefix drawn once per worker and a counter. nginx's own draws 16
-- bytes from OpenSSL for every request, which cost more than the rest of the router's Lua.
-- A new prefix is drawn when the counter wraps, so an id never repeats within a worker's life,
-- and 96 random bits keep workers, restarts and hosts apart.
local bit = require "bit"

local tohex = bit.tohex
local byte = string.byte
local format = string.format
local rep = string.rep
local io_open = io.open
local error = error
local tostring = tostring

local _M = {}

local PREFIX_BYTES = 12
local WRAP = 4294967296 -- the counter's eight hex digits

local read_random
local prefix
local counter = 0

-- n random bytes, or nil and an error.
local function urandom(n)
    local file, err = io_open("/dev/urandom", "rb")
    if not file then
        return nil, err
    end
    local bytes = file:read(n)
    file:close()
    if not bytes or #bytes ~= n then
        return nil, "short read from /dev/urandom"
    end
    return bytes
end

local function new_prefix(read)
    local bytes, err = read(PREFIX_BYTES)
    if not bytes then
        error("llm_router: cannot draw a request id prefix: " .. tostring(err))
    end
    return format(rep("%02x", PREFIX_BYTES), byte(bytes, 1, PREFIX_BYTES))
end

-- init_worker_by_lua. For tests: read(n) gives n random bytes (nil and an error on failure;
-- the default reads /dev/urandom), and the counter can start elsewhere than 0.
function _M.start(read, counter_start)
    read_random = read or urandom
    prefix = new_prefix(read_random)
    counter = counter_start or 0
end

function _M.next()
    counter = counter + 1
    if counter == WRAP then
        prefix = new_prefix(read_random)
        counter = 1
    end
    return prefix .. tohex(counter)
end

return _M
