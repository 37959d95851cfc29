-- wrk: POST with a small body, like the rollout load.
wrk.method = "POST"
wrk.body = "lameduck-bench"
wrk.headers["Content-Type"] = "text/plain"
