"""The built-in reverse proxy: HTTP/1.1 routing to the live colour (the agent's data plane).

Per request it asks a :class:`RouteTable` for the live colour and an available upstream
of it, keeps connections alive on both sides, re-frames bodies both ways, and adds
``X-Forwarded-For/Proto/Host`` upstream and ``X-BG-Env: <colour>`` downstream.

Modules, each readable alone:

- ``channel``: one connection as buffered reads and writes with back-pressure;
- ``request`` / ``response``: strict parsing (llhttp through httptools) and framing;
- ``pool``: upstreams, their idle connections, the route table;
- ``forward``: one request forwarded, and when a retry is safe (the full path, a task);
- ``fast``: the common plain exchange in callbacks, handed to ``forward`` otherwise;
- ``tunnel``: upgraded (WebSocket) connections pinned to a colour;
- ``server``: the listener, connection cap, TLS, the timeout reaper, stats;
- ``fastloop``: uvloop for ``bgconsole serve`` when installed;
- ``tally``: repeated errors reported once with a count.
"""

from console.core.proxy import fastloop
from console.core.proxy.forward import Timeouts
from console.core.proxy.pool import RouteTable, Upstream, route_table_from_hosts
from console.core.proxy.request import IDEMPOTENT
from console.core.proxy.server import Proxy, ProxyStats, default_max_connections

__all__ = [
    "IDEMPOTENT",
    "Proxy",
    "ProxyStats",
    "RouteTable",
    "Timeouts",
    "Upstream",
    "default_max_connections",
    "fastloop",
    "route_table_from_hosts",
]
