-- nginx's Lua module provides `ngx`; busted provides describe/it/assert in the specs.
std = "luajit"
globals = { "ngx" }
files["tests/lua"] = { std = "+busted" }
max_line_length = 120
