-- wrk script: the load test's chat request, each connection waiting 1 ms between requests,
-- for latency below saturation (32 connections: 17 000 to 20 000 requests/s here, about a
-- third of the gateway's peak under wrk).
dofile("tools/load/chat.lua")

function delay()
  return 1
end
