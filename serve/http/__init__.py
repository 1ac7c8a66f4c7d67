"""The REST front end: TF Serving's HTTP API (`/v1`), KServe V2 (`/v2`) and pulsecast's routes.

    app.py         RestApp, the ASGI application: lifespan, responses, errors, metrics
    routes.py      every route: the URL grammar and which handler answers
    tf_serving.py  the /v1 handlers: predict, classify, regress, status, metadata, :forecast
    kserve.py      the /v2 routes (Open Inference Protocol)
    forecast.py    :forecast's window (values checked, conditioned as ingest did) and answer
    forecast_body.py  :forecast's request body (a pydantic model) and its 400s
    plumbing.py    shared by all routes: HttpError, Outcome, bearer auth, body limits, workers
    openapi.py     /openapi.json and /docs
    timeouts.py    uvicorn's HTTP protocol with header and body read deadlines (slow clients)

Every error is `{"error": message}` with TF Serving's status mapping (`serve.errors`). Models
come from the version manager (`serve.versions`); JSON is coded by `serve.wire.json_tensor`.
"""
