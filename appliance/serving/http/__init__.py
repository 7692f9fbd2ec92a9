"""The HTTP edge of the serving daemon: Open Inference Protocol (KServe V2) REST.

``create_app()`` reads the configuration once and returns a ``ServingApp``, a
plain ASGI application (no framework) that gunicorn's ASGI worker runs with
one worker process::

    gunicorn -k asgi -w 1 'appliance.serving.http:create_app()'

``appliance serve`` runs the same application through ``run()``, the built-in
HTTP/1.1 server on asyncio. Either way one process owns the sessions and one
batcher thread per model version.

Two modules, by meaning: ``app`` is the application (routing, authorisation,
errors, the V2, Triton and metadata handlers, the one request adapter both
servers use); ``transport`` is the built-in server (connections, parsing,
timeouts, limits, busy polling, the daemon's main loop).
"""

from appliance.serving.http.app import (
    Authorizer,
    AuthRequest,
    ServingApp,
    create_app,
    is_loopback,
    loopback_authorizer,
    token_authorizer,
)
from appliance.serving.http.transport import (
    BUSY_POLL_US,
    BusyPoll,
    Connection,
    Limits,
    ServerThread,
    run,
    serve,
    write_heartbeat,
)

__all__ = ["BUSY_POLL_US", "AuthRequest", "Authorizer", "BusyPoll", "Connection", "Limits",
           "ServerThread", "ServingApp", "create_app", "is_loopback", "loopback_authorizer",
           "run", "serve", "token_authorizer", "write_heartbeat"]
