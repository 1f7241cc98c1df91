"""`vitkit serve`: a trained model behind an HTTP API and a web page, with dynamic micro-batching.

One module per job: `engine` (the model, loaded and called through vitkit's inference code), `uploads`
(reading and decoding a request's image, refusing bad input with a status and a reason), `batcher` (concurrent
requests run as one batch), `metrics` (Prometheus), `page` (the HTML page at /) and `app` (the FastAPI routes).
The server holds no state between requests, so scale-out is replicas behind any load balancer.
"""

from vitkit.serve.app import ServeSettings, create_app
from vitkit.serve.engine import Engine

__all__ = ["Engine", "ServeSettings", "create_app"]
