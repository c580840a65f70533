"""Corral's wire contract: the `corral.v1` protocol and its generated stubs.

The generated modules live in `corral_protocol.v1`. Every call carries the protocol version in
the `corral-protocol-version` metadata key and a bearer token in `authorization`.
"""

PROTOCOL_VERSION = 1
"""The major protocol version this package speaks. Fields are only ever added within a version."""

VERSION_METADATA_KEY = "corral-protocol-version"
AUTHORIZATION_METADATA_KEY = "authorization"
CALL_ID_METADATA_KEY = "corral-call-id"
"""Initial metadata of `Invoke(wait=true)`: the call's id, sent before the result, so a caller whose
deadline fires can still collect the result with `GetResult`."""

DEFAULT_DRAIN_TIMEOUT_S = 300.0
"""`DrainNodeRequest.timeout_s` when it is 0: how long a drained node's containers get to finish."""

APP_HEARTBEAT_INTERVAL_S = 10.0
"""How often a client running an ephemeral app (`app.run()`) tells the control plane it is alive;
the plane's timeout (CORRAL_APP_HEARTBEAT_TIMEOUT_S) is at least twice this."""

__all__ = ["APP_HEARTBEAT_INTERVAL_S", "AUTHORIZATION_METADATA_KEY", "CALL_ID_METADATA_KEY", "DEFAULT_DRAIN_TIMEOUT_S", "PROTOCOL_VERSION", "VERSION_METADATA_KEY"]
