-- ARGV: prefix, then the jobs (push_jobs). Returns JSON.
local refused = check_jobs(2)
if refused then return refused end
return cjson.encode(push_jobs(2, now_us()))
