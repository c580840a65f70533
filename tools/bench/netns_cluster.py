"""A Corral cluster whose nodes live in their own network namespaces, for tests and benchmarks.

    with NetnsCluster.start(work_dir, [NodeSpec("node-a", "H100:8"), NodeSpec("node-c", None)]) as cluster:
        client = cluster.client()          # the test process, in the root namespace, over TLS
        ...

What it builds (root and iproute2 needed; `NetnsCluster.start` cleans up whatever it made, even when
a step fails, and `stop` removes it all):

- one bridge `crlb-<tag>` in the root namespace holding 10.213.X.1/24, where X is picked at random
  among the /24s no interface of this host uses; ONLY these test-made addresses are ever targeted;
- per node, a network namespace `corral-t-<tag>-<i>` joined to the bridge by a veth pair, the
  node's end holding 10.213.X.(10+i)/24 (and its loopback up);
- a CA and a server certificate for 10.213.X.1, made here with `cryptography`;
- one control plane, `corral up --no-node`, listening with TLS on 10.213.X.1 only;
- a join token (`corral node join-token create`), in a file of mode 0600;
- per node, `corral-node` run under `nsenter --net=/run/netns/...` (not `ip netns exec`, which
  remounts /sys and so hides the cgroup hierarchies runc needs), joining over TLS with the join
  token and advertising its namespace address for direct calls. Under runc a container keeps its
  node's network namespace, so its direct port really is on the namespace's address.

No forwarding or NAT is needed: every address is on the bridge's one segment.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUBNET_PREFIX = "10.213"
_START_TIMEOUT_S = 60.0


class NetnsUnavailable(Exception):
    """This machine cannot make network namespaces (not root, or no `ip`/`nsenter`)."""


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a namespace cluster; empty when it has everything."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("ip", "bridge", "nsenter"):
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` command")
    return missing


@dataclass(frozen=True)
class NodeSpec:
    """A node to start: its name and simulated GPUs (`H100:8`; None for a CPU node)."""

    name: str
    simulate_gpus: str | None = None


@dataclass
class NetnsNode:
    spec: NodeSpec
    namespace: str
    address: str
    work_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def _subnets_in_use() -> set[int]:
    """The X of every 10.213.X.0/24 that an interface or route of this host already uses."""
    used = set()
    for command in (["ip", "-o", "addr"], ["ip", "route"]):
        for word in subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.split():
            if word.startswith(SUBNET_PREFIX + "."):
                used.add(int(word.split(".")[2].split("/")[0]))
    return used


def make_certificates(directory: Path, address: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate (for `address` and 127.0.0.1) it signed: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(a)) for a in (address, "127.0.0.1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"corral control plane {address}")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def _stop_process(process: subprocess.Popen[Any] | None, timeout: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class NetnsCluster:
    """The control plane on the host bridge and its nodes, each in its own network namespace."""

    work_dir: Path
    tag: str
    subnet: int
    bridge: str
    nodes: list[NetnsNode] = field(default_factory=list)
    plane: subprocess.Popen[bytes] | None = None
    port: int = 0
    ca: Path | None = None
    join_token_file: Path | None = None
    _namespaces: list[str] = field(default_factory=list)
    _bridge_made: bool = False

    @property
    def host_address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet}.1"

    @property
    def home(self) -> Path:
        return self.work_dir / "plane-home"

    @property
    def url(self) -> str:
        return f"grpcs://{self.host_address}:{self.port}"

    @property
    def admin_token(self) -> str:
        return (self.home / "token").read_text().strip()

    @property
    def plane_log(self) -> Path:
        return self.work_dir / "plane.log"

    def client_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a client process (the CLI, a user's program) of this cluster."""
        from corral_protocol import env as corral_env

        environ = dict(os.environ)
        environ.update({
            corral_env.CORRAL_SERVER_URL: self.url, corral_env.CORRAL_TOKEN: self.admin_token,
            corral_env.CORRAL_TLS_CA: str(self.ca), corral_env.CORRAL_HOME: str(self.work_dir / "client-home"),
        })
        environ.update(extra or {})
        return environ

    def client(self) -> Any:
        """A `corral.Client` of this cluster, with the admin token, over TLS."""
        import corral

        return corral.Client(self.url, self.admin_token, ca=str(self.ca))

    @classmethod
    @contextmanager
    def running(cls, work_dir: Path, specs: list[NodeSpec], plane_env: dict[str, str] | None = None,
                node_env: dict[str, str] | None = None) -> Iterator[NetnsCluster]:
        """Start a cluster, yield it, and remove everything it made however the body ends."""
        cluster = cls.start(work_dir, specs, plane_env=plane_env, node_env=node_env)
        try:
            yield cluster
        finally:
            cluster.stop()

    @classmethod
    def start(cls, work_dir: Path, specs: list[NodeSpec], plane_env: dict[str, str] | None = None,
              node_env: dict[str, str] | None = None) -> NetnsCluster:
        missing = missing_prerequisites()
        if missing:
            raise NetnsUnavailable(f"network-namespace nodes need {' and '.join(missing)}")
        free = sorted(set(range(1, 255)) - _subnets_in_use())
        if not free:
            raise RuntimeError(f"every {SUBNET_PREFIX}.X.0/24 is in use on this host")
        tag = secrets.token_hex(3)
        cluster = cls(work_dir, tag, random.choice(free), f"crlb-{tag}")
        try:
            cluster._make_network(len(specs))
            cluster._start_plane(plane_env or {})
            cluster._start_nodes(specs, node_env or {})
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _make_network(self, count: int) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._bridge_made = True
        _ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for index in range(count):
            namespace = f"corral-t-{self.tag}-{index}"
            host_end, node_end = f"crlh-{self.tag}-{index}", f"crln-{self.tag}-{index}"
            _ip("netns", "add", namespace)
            self._namespaces.append(namespace)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
            _ip("link", "set", node_end, "netns", namespace)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("addr", "add", f"{SUBNET_PREFIX}.{self.subnet}.{10 + index}/24", "dev", node_end, namespace=namespace)
            _ip("link", "set", node_end, "up", namespace=namespace)
            _ip("link", "set", "lo", "up", namespace=namespace)

    def _free_port(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind((self.host_address, 0))
            return int(s.getsockname()[1])

    def _corral(self, *args: str) -> subprocess.CompletedProcess[str]:
        from corral_protocol import env as corral_env

        environ = {k: v for k, v in os.environ.items() if k not in (corral_env.CORRAL_SERVER_URL, corral_env.CORRAL_TOKEN)}
        environ[corral_env.CORRAL_HOME] = str(self.home)
        return subprocess.run([sys.executable, "-m", "corral.cli", *args], env=environ, capture_output=True, text=True, timeout=60)

    def _start_plane(self, plane_env: dict[str, str]) -> None:
        from corral_protocol import env as corral_env

        self.ca, cert, key = make_certificates(self.work_dir / "tls", self.host_address)
        self.port = self._free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if k not in (corral_env.CORRAL_SERVER_URL, corral_env.CORRAL_TOKEN)}
        environ.update(plane_env, **{corral_env.CORRAL_HOME: str(self.home)})
        with open(self.plane_log, "ab") as log:
            self.plane = subprocess.Popen(
                [sys.executable, "-m", "corral.cli", "up", "--no-node", "--host", self.host_address, "--port", str(self.port),
                 "--http-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)],
                env=environ, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not (self.home / "server.json").exists():
            if self.plane.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the control plane did not start:\n{self.plane_log.read_text(errors='replace')}")
            time.sleep(0.05)
        created = self._corral("node", "join-token", "create", "--description", f"netns cluster {self.tag}")
        if created.returncode != 0:
            raise RuntimeError(f"corral node join-token create failed: {created.stderr}")
        self.join_token_file = self.write_token_file("join-token", created.stdout.splitlines()[0].strip())

    def write_token_file(self, name: str, token: str) -> Path:
        """`token` in a file of mode 0600 under the work directory."""
        path = self.work_dir / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(token + "\n")
        return path

    def node_command(self, spec: NodeSpec, namespace: str | None, address: str, work_dir: Path, *,
                     server: str | None = None, token_file: Path | None = None, tls_ca: Path | None = None) -> list[str]:
        """The argv that runs `corral-node` in `namespace` (None: the root namespace), by default with
        this cluster's URL, join token and CA."""
        enter = ["nsenter", f"--net=/run/netns/{namespace}"] if namespace else []
        argv = [*enter, sys.executable, "-m", "corral_runtime.node_cli",
                "--server", server or self.url, "--token-file", str(token_file or self.join_token_file),
                "--name", spec.name, "--advertise-host", address, "--work-dir", str(work_dir)]
        ca = tls_ca or self.ca
        if (server or self.url).startswith("grpcs://") and ca is not None:
            argv += ["--tls-ca", str(ca)]
        if spec.simulate_gpus:
            argv += ["--simulate-gpus", spec.simulate_gpus]
        return argv

    def node_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        from corral_protocol import env as corral_env

        environ = {k: v for k, v in os.environ.items() if k not in corral_env.NODE_CREDENTIALS}
        environ.update(extra or {})
        return environ

    def _start_nodes(self, specs: list[NodeSpec], node_env: dict[str, str]) -> None:
        for index, spec in enumerate(specs):
            address = f"{SUBNET_PREFIX}.{self.subnet}.{10 + index}"
            node = NetnsNode(spec, self._namespaces[index], address, self.work_dir / spec.name, self.work_dir / f"{spec.name}.log")
            with open(node.log_path, "ab") as log:
                node.process = subprocess.Popen(
                    self.node_command(spec, node.namespace, address, node.work_dir), env=self.node_env(node_env),
                    stdout=log, stderr=subprocess.STDOUT,
                )
            self.nodes.append(node)
        self.wait_for_nodes({spec.name for spec in specs})

    def wait_for_nodes(self, names: set[str], timeout: float = _START_TIMEOUT_S) -> None:
        from corral_protocol.v1 import control_pb2

        client = self.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                listed = {n.name for n in client.call(client.stub.ListNodes, control_pb2.ListNodesRequest(), timeout=10).nodes}
                if names <= listed:
                    return
                dead = [n for n in self.nodes if n.process is not None and n.process.poll() is not None]
                if dead or time.monotonic() > deadline:
                    logs = "\n".join(f"--- {n.spec.name}:\n{n.logs()[-3000:]}" for n in self.nodes)
                    raise RuntimeError(f"nodes did not join (registered: {sorted(listed)}):\n{logs}")
                time.sleep(0.1)
        finally:
            client.close()

    def node(self, name: str) -> NetnsNode:
        return next(n for n in self.nodes if n.spec.name == name)

    def cut_off(self, name: str, cut: bool = True) -> None:
        """Cut node `name`'s network (or restore it, `cut=False`) the way a failed switch does:
        its bridge port is disabled, so frames are dropped both ways, silently; both ends keep
        their carrier and no connection is closed."""
        port = f"crlh-{self.tag}-{[n.spec.name for n in self.nodes].index(name)}"
        subprocess.run(["bridge", "link", "set", "dev", port, "state", "0" if cut else "3"], check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        """Stop the nodes (their containers first) and the control plane, then remove every
        namespace and link this cluster made. Safe to call twice and after a failed start."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGINT)
        for node in self.nodes:
            _stop_process(node.process, timeout=120)  # hundreds of containers stop in parallel, on a busy machine
        _stop_process(self.plane, timeout=60)
        for namespace in self._namespaces:
            # Whatever still runs in the namespace was started by this cluster (a node's orphan).
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        self._namespaces.clear()
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
            self._bridge_made = False
        self._unmount_leftovers()

    def _unmount_leftovers(self) -> None:
        """Mounts under the work directory that a killed `runc create` left behind (runc 1.1 binds
        a copy of itself in the container's state directory), deepest first, so it can be removed."""
        prefix = str(self.work_dir.resolve()) + "/"
        points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 1]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)

    def describe(self) -> str:
        """One JSON line: what this cluster is made of (for a benchmark's output)."""
        return json.dumps({"url": self.url, "nodes": {n.spec.name: n.address for n in self.nodes}})
