-- wrk script: one small chat request, the same for the gateway and the bare mock.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-load-000000000000000000000000"
wrk.body = '{"model":"mock-model","max_tokens":16,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello there, how are you doing today? Tell me something nice."}]}'
