-- Picks the catalog model for a request's model name: an exact served name first (what vLLM
-- itself accepts, so it must win), then the longest case-insensitive route_matches substring,
-- so that aliases and other spellings of a model id still reach its backend. Lowercasing is
-- ASCII-only (string.lower in the C locale).
--
-- new(models) takes the catalog as rendered by Ansible, which has already rejected duplicate
-- names and ambiguous matches; bad input here is a programmer error and raises.
local type = type
local error = error
local ipairs = ipairs
local setmetatable = setmetatable
local find = string.find
local lower = string.lower
local sort = table.sort

local _M = {}
local mt = { __index = _M }

local function check_list(list, what, min)
  if type(list) ~= "table" or #list < min then
    error("routes: " .. what .. " must be an array of at least " .. min .. " string(s)", 3)
  end
  for _, v in ipairs(list) do
    if type(v) ~= "string" or v == "" then
      error("routes: " .. what .. " must hold non-empty strings", 3)
    end
  end
end

-- models: array of { key = "qwen", served_names = {...}, route_matches = {...},
-- upstream = "vllm_qwen" }. select() returns these tables themselves.
function _M.new(models)
  if type(models) ~= "table" then
    error("routes: models must be an array", 2)
  end
  local exact, names, matches = {}, {}, {}
  for i, model in ipairs(models) do
    if type(model) ~= "table" or type(model.key) ~= "string" or model.key == "" then
      error("routes: model " .. i .. " needs a non-empty string key", 2)
    end
    if type(model.upstream) ~= "string" or model.upstream == "" then
      error("routes: model " .. model.key .. " needs a non-empty string upstream", 2)
    end
    check_list(model.served_names, model.key .. ".served_names", 1)
    -- An empty route_matches list is valid: the model is reachable by its exact names only.
    check_list(model.route_matches or {}, model.key .. ".route_matches", 0)
    for _, name in ipairs(model.served_names) do
      if exact[name] then
        error("routes: served name " .. name .. " is used twice", 2)
      end
      exact[name] = model
      names[#names + 1] = name
    end
    for _, m in ipairs(model.route_matches or {}) do
      matches[#matches + 1] = { needle = lower(m), model = model, order = #matches + 1 }
    end
  end
  -- table.sort is not stable, so catalog order breaks length ties explicitly.
  sort(matches, function(a, b)
    if #a.needle ~= #b.needle then
      return #a.needle > #b.needle
    end
    return a.order < b.order
  end)
  return setmetatable({ exact = exact, names_ = names, matches = matches }, mt)
end

-- name: the request's model string. Returns the model table and whether the name was one of
-- its served names (true) or a route match (false), or nil when nothing matches.
function _M.select(self, name)
  local model = self.exact[name]
  if model then
    return model, true
  end
  name = lower(name)
  local matches = self.matches
  for i = 1, #matches do
    if find(name, matches[i].needle, 1, true) then
      return matches[i].model, false
    end
  end
  return nil
end

-- All served names in catalog order, for the "available models" part of a 404. A fresh copy,
-- so the caller may sort or extend it.
function _M.names(self)
  local copy = {}
  for i, name in ipairs(self.names_) do
    copy[i] = name
  end
  return copy
end

return _M
