"""The `CORRAL_*` environment variables: their one spelling, for every package.

The SDK, the control plane, the node and the worker read and write these; a name written as a
literal anywhere else is a bug (`tests/unit/test_one_home.py` checks).

Example:
    from corral_protocol import env

    url = os.environ.get(env.CORRAL_SERVER_URL)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Where a client (the SDK, the CLI, a node daemon) finds its server.
CORRAL_SERVER_URL = "CORRAL_SERVER_URL"
"""The control plane's URL, `grpc://host:port` or `grpcs://host:port`."""
CORRAL_TOKEN = "CORRAL_TOKEN"
"""The control plane's admin token, with `CORRAL_SERVER_URL`."""
CORRAL_HOME = "CORRAL_HOME"
"""The folder of the embedded cluster's state (default: the user's data directory)."""
CORRAL_TLS_CA = "CORRAL_TLS_CA"
"""A PEM file of the certificate(s) to trust for `grpcs://` servers, e.g. the self-signed one of
`corral up --tls-self-signed` (pinned); default: the system's roots."""
CORRAL_TLS_CA_PEM = "CORRAL_TLS_CA_PEM"
"""The same certificate(s) as PEM text, read when `CORRAL_TLS_CA` is unset: a node gives it to its
containers, which cannot read the node's files, so their workers and their calls reach a `grpcs://`
control plane (`corral_protocol.transport`)."""

# What the node gives each container (the worker's identity).
CORRAL_CONTAINER_ID = "CORRAL_CONTAINER_ID"
"""The container's id; its presence also tells code that it runs inside a Corral container."""
CORRAL_CONTAINER_TOKEN = "CORRAL_CONTAINER_TOKEN"
"""The token the worker presents to the control plane."""
CORRAL_CONTROL_URL = "CORRAL_CONTROL_URL"
"""The control plane's URL, as the worker reaches it."""
CORRAL_BUNDLE_DIR = "CORRAL_BUNDLE_DIR"
"""The folder holding the app's code bundle, put first on the worker's `sys.path`."""
CORRAL_DIRECT_HOST = "CORRAL_DIRECT_HOST"
"""The host the worker's direct server listens on (the node's advertised host)."""
CORRAL_SECRET_KEYS = "CORRAL_SECRET_KEYS"
"""Comma-separated names (never values) of the container's variables that come from secrets: the
worker masks their values in what it reports (`corral_runtime.redaction`)."""

# What the control plane adds to a container's environment.
CORRAL_APP_ID = "CORRAL_APP_ID"
CORRAL_APP_NAME = "CORRAL_APP_NAME"
CORRAL_APP_KIND = "CORRAL_APP_KIND"
"""`APP_KIND_DEPLOYED` or `APP_KIND_EPHEMERAL`; ephemeral (dev) apps show tracebacks in web errors."""
APP_KIND_DEPLOYED = "deployed"
APP_KIND_EPHEMERAL = "ephemeral"


def is_dev_mode(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a container of an ephemeral (dev) app: its errors carry tracebacks to every
    caller, JSON and web callers included (deployed apps keep server paths to themselves)."""
    return environ.get(CORRAL_APP_KIND) == APP_KIND_EPHEMERAL

# Settings of the control plane's process.
CORRAL_MAX_QUEUE = "CORRAL_MAX_QUEUE"
"""Inputs each service's queue holds at most (default 100,000)."""
CORRAL_HTTP_MAX_BODY = "CORRAL_HTTP_MAX_BODY"
"""Bytes a web request's body may have at most (default 16 MiB, never more than the payload limit)."""
CORRAL_STATE_URL = "CORRAL_STATE_URL"
"""Where `corral up` keeps the control plane's state: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`
(state that outlives the machine), or `sqlite:///DIR` / unset (SQLite files under
`$CORRAL_HOME/state`, the embedded default). `corral up --state-url` overrides it."""
CORRAL_LEADER_LEASE_S = "CORRAL_LEADER_LEASE_S"
"""Seconds a control plane's leader lease on PostgreSQL state lasts unrenewed (default 10): after a
leader dies, a standby (or its restart elsewhere) takes over within this time."""
CORRAL_APP_HEARTBEAT_TIMEOUT_S = "CORRAL_APP_HEARTBEAT_TIMEOUT_S"
"""Seconds an ephemeral app (`app.run()`) lives without a heartbeat from its client before the
control plane stops it (default 60; clients beat every 10 s, so at least 20)."""
CORRAL_DIRECT_IDLE_TIMEOUT_S = "CORRAL_DIRECT_IDLE_TIMEOUT_S"
"""Seconds a container keeps an authenticated direct connection with no input before closing it
(default 60, at least 5): a node-wide setting its containers inherit."""
CORRAL_NODE_TIMEOUT_S = "CORRAL_NODE_TIMEOUT_S"
"""Seconds without a message from a node before it is lost (default 10; `corral up --node-timeout`).
Nodes are told to send heartbeats four times per timeout (at most every 5 s)."""

# Read by every process (SDK, control plane, node, worker): see corral_protocol.payloads.
CORRAL_MAX_PAYLOAD_BYTES = "CORRAL_MAX_PAYLOAD_BYTES"
"""Bytes an input's serialized arguments, or a serialized result, may have at most (default 64 MiB)."""

# Settings of a node daemon.
CORRAL_NODE_ADVERTISE_HOST = "CORRAL_NODE_ADVERTISE_HOST"
"""The host clients reach this node's containers on (default 127.0.0.1)."""
CORRAL_SNAPSHOT_LAZY_PAGES = "CORRAL_SNAPSHOT_LAZY_PAGES"
"""`auto`, `on` or `off`: whether snapshot restores use CRIU's lazy pages."""
CORRAL_SIMULATE_GPUS = "CORRAL_SIMULATE_GPUS"
"""GPUs a node declares instead of reading NVML, e.g. `H100:8` or `H100:4,A100-80GB:4` (also read by
the node `corral up` embeds): for tests and capacity planning only; `corral node list` says "simulated"."""

CORRAL_NODE_ISOLATION = "CORRAL_NODE_ISOLATION"
"""`auto` (runc where the node is root and has it, else plain processes), `runc`, or `none` (plain
processes, no isolation; also read by the node `corral up` embeds)."""
CORRAL_NODE_VOLUMES = "CORRAL_NODE_VOLUMES"
"""Host directories every container of the node sees, `HOST[:CONTAINER][:ro|rw]`, comma-separated."""
CORRAL_IMAGE_HASH = "CORRAL_IMAGE_HASH"
"""Set in a container that runs in a built image: the image's content hash (unset on the node's own
environment, where the worker checks that the image's pip requirements are installed)."""
CORRAL_IMAGE_CACHE = "CORRAL_IMAGE_CACHE"
"""Where a node keeps image bases and layers (default `/var/cache/corral/images` as root, else under
its work directory); nodes of one machine may share it."""
CORRAL_IMAGE_CACHE_MAX_GB = "CORRAL_IMAGE_CACHE_MAX_GB"
"""The image cache's size bound in GB (default 50); least-recently-used layers go beyond it."""
CORRAL_BUILD_MEMORY_MIB = "CORRAL_BUILD_MEMORY_MIB"
"""The memory limit of an image build step's container in MiB (default 4096; `corral-node --build-memory`)."""
CORRAL_BUILD_CPU = "CORRAL_BUILD_CPU"
"""The CPU quota of an image build step's container in cores (default 0: all of the node's; `--build-cpu`)."""
CORRAL_BUILD_PIDS = "CORRAL_BUILD_PIDS"
"""The most tasks an image build step's container may hold (default 4096; `--build-pids`)."""
CORRAL_BUILD_STEP_TIMEOUT_S = "CORRAL_BUILD_STEP_TIMEOUT_S"
"""The time limit of one image build step in seconds (default 1800; `--build-timeout`)."""

CORRAL_NODE_WARM_POOL = "CORRAL_NODE_WARM_POOL"
"""How many generic containers an isolated node keeps started ahead, waiting for their first
assignment (default `DEFAULT_WARM_POOL`; 0 turns the pool off; also read by the node `corral up`
embeds). See "Warm pool" in docs/architecture.md."""
DEFAULT_WARM_POOL = 2

NODE_CREDENTIALS = (CORRAL_TOKEN, CORRAL_SERVER_URL, CORRAL_HOME, CORRAL_TLS_CA)
"""The node's own credentials and state, never passed on to a container's environment (nor is
anything else outside `CONTAINER_INHERITED_ENV`; a container cannot read the node's CA file: it
gets the certificate's text in `CORRAL_TLS_CA_PEM` instead)."""

# What a container inherits from its node's environment: an allow-list. Everything else the node
# has (cloud credentials, tokens, the node's own settings) stays on the node; the container's own
# identity, secrets and the app's env come from the control plane, and GPUs from the node's choice.
CONTAINER_INHERITED_ENV = (
    "PATH", "LANG", "LANGUAGE", "TZ",
    # Where the node's Python finds its packages: containers run on that environment, seen read-only.
    "PYTHONPATH", "PYTHONHOME",
    # A node-wide limit every process must agree on (corral_protocol.payloads).
    CORRAL_MAX_PAYLOAD_BYTES,
    # A node-wide bound of containers' direct ports (corral_protocol.framing).
    CORRAL_DIRECT_IDLE_TIMEOUT_S,
)
CONTAINER_INHERITED_PREFIXES = ("LC_",)
"""Locale categories (`LC_ALL`, `LC_CTYPE`, ...) are inherited as well."""


def container_base_env(node_environ: Mapping[str, str]) -> dict[str, str]:
    """The part of a node's environment its containers inherit: only `CONTAINER_INHERITED_ENV` and
    the `LC_*` locale names. The node then adds the runtime's own settings (HOME, PYTHONUNBUFFERED)
    and the container's identity, secrets and GPUs.

    Example:
        >>> container_base_env({"PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": "x", "LC_ALL": "C.UTF-8"})
        {'PATH': '/usr/bin', 'LC_ALL': 'C.UTF-8'}
    """
    return {name: value for name, value in node_environ.items()
            if name in CONTAINER_INHERITED_ENV or name.startswith(CONTAINER_INHERITED_PREFIXES)}
