-- wrk script: POST a typical pod AdmissionReview to the webhook.
local f = assert(io.open(os.getenv("BODY") or "scripts/bench/admission-review.json", "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
