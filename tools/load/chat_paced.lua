-- wrk script: the load test's chat request, each connection waiting 1 ms between requests,
-- for latency at a fixed fraction of peak (32 connections: about 26 000 requests/s, half the
-- gateway's peak under wrk) rather than at saturation.
dofile("tools/load/chat.lua")

function delay()
  return 1
end
