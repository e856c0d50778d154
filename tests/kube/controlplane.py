"""A real Kubernetes control plane for the cluster tests: etcd, kube-apiserver and
kube-controller-manager at the Kubernetes release the flake's k3s carries (scripts/kubernetes.sh
builds and caches them), started as k3s starts them and serving from the stack's CAs.

The flags are k3s' own (pkg/daemons/control/server.go: apiServer, controllerManager), restated
here, plus what our NixOS k3s module renders (nixos/roles/k3s-server.nix): `--service-cidr` is the
API server's and the controller manager's service range, `--cluster-cidr` the controller
manager's, `--secrets-encryption` an EncryptionConfiguration as k3s writes it
(pkg/secretsencrypt, aescbc), `--tls-san` the serving certificate's names. An unknown or misspelt
flag stops the start with the binary's own message, as k3s would. What k3s does beside these
binaries (its supervisor, tokens, the embedded-etcd membership, the egress selector, its cloud
controller) is not here: the stand-in k3s keeps it (tests/standin/k3s.py).

Every process is this test process' child on a test address (127.0.0.1, or a fleet's first
control plane's), at ports free when chosen and chosen again when another process bound one
first, and is stopped with the fixture that started it.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.kube import pki
from tests.testhosts import poll, port_open

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0  # a bound for a loaded machine, not an expectation (~3 s idle)
PORT_ATTEMPTS = 5  # starts of one process on new ports after another process took one of its own


class PortTaken(RuntimeError):
    """A process exited because a port chosen free for it was bound meanwhile."""


def binaries() -> Path | None:
    """The cached binaries' directory when scripts/kubernetes.sh has built them, else None."""
    res = subprocess.run(["sh", str(ROOT / "scripts/kubernetes.sh"), "--check"], capture_output=True, text=True)
    return Path(res.stdout.strip()) if res.returncode == 0 else None


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (bind to 0, connect)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(address: str, count: int) -> list[int]:
    """`count` distinct ports free on `address`, outside the kernel's ephemeral range where it
    leaves room (a port the kernel handed out for bind(0) may be handed out again, to any outgoing
    connection, before the server binds it). Free now is not free later: the processes are
    restarted on a lost race (ControlPlane._launch)."""
    low, high = ephemeral_range()
    spans = [(a, b) for a, b in ((20000, low), (high + 1, 65536)) if b - a >= 1000] or [(20000, 65536)]
    span = max(spans, key=lambda r: r[1] - r[0])
    rng = random.SystemRandom()
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            s = socket.socket()
            try:
                s.bind((address, rng.randrange(*span)))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def kubeconfig(server: str, ca_cert: str, user: pki.Pair, name: str = "default") -> str:
    """A kubeconfig as k3s writes its own (k3s.yaml, kubelet.kubeconfig): one cluster, one user."""
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"client-certificate-data": b64(user.cert), "client-key-data": b64(user.key)}}],
    })


def encryption_config() -> dict:
    """What k3s writes for --secrets-encryption (server/cred/encryption-config.json): aescbc with a
    random 32-byte key first, identity after (reads of Secrets written before encryption)."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return {"kind": "EncryptionConfiguration", "apiVersion": "apiserver.config.k8s.io/v1",
            "resources": [{"resources": ["secrets"],
                           "providers": [{"aescbc": {"keys": [{"name": "aescbckey", "secret": key}]}}, {"identity": {}}]}]}


@dataclass
class ControlPlane:
    """One cluster's etcd, API server and controller manager (see the module docstring)."""

    __test__ = False

    root: Path
    bin: Path
    cas: dict[str, pki.Pair]
    service_cidr: str = "10.43.0.0/16"
    cluster_cidr: str = "10.42.0.0/16"
    tls_sans: tuple[str, ...] = ()
    address: str = "127.0.0.1"
    extra_api_args: tuple[str, ...] = ()
    node_monitor_grace_s: float | None = None  # the node lifecycle controller's grace period (default 50 s)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    api_port: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds from start() (bench/kube_api.py)
    # Wait for the controller manager (its first ServiceAccount, ~5 s more); a fleet of machines
    # does not: its first pod comes long after its machines booted and a delivery ran.
    wait_for_controllers: bool = True

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    def file(self, name: str, text: str, mode: int = 0o600) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return str(path)

    def pair(self, name: str, pair: pki.Pair) -> tuple[str, str]:
        return self.file(f"{name}.crt", pair.cert, 0o644), self.file(f"{name}.key", pair.key)

    # ------------------------------------------------------------------ identities

    def user(self, cn: str, *groups: str) -> Path:
        """A kubeconfig for the user `cn` in `groups`, its certificate from the stack's client CA."""
        slug = cn.replace(":", "-")
        cert = pki.leaf(self.cas["client-ca"], cn, tuple(groups))
        self.pair(f"users/{slug}", cert)
        return Path(self.file(f"users/{slug}.kubeconfig", kubeconfig(self.server, self.cas["server-ca"].cert, cert)))

    def admin(self) -> Path:
        """k3s' admin (k3s.yaml): system:admin in system:masters."""
        return self.root / "users/system-admin.kubeconfig"

    def node(self, name: str) -> Path:
        """A node's kubelet credentials (k3s: agent/kubelet.kubeconfig): system:node:<name>."""
        path = self.root / f"users/system-node-{name}.kubeconfig"
        return path if path.exists() else self.user(f"system:node:{name}", "system:nodes")

    def kubectl(self, kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 120
                ) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "kubectl"), "--kubeconfig", str(kubeconfig), *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout)

    def request(self, cn: str, method: str, path: str, body: dict | None = None,
                content_type: str = "application/strategic-merge-patch+json") -> tuple[int, dict]:
        """One HTTP request as the user `cn` (made by `user` or `node` first), as a client library
        sends it: kubectl has no raw PATCH, and a kubelet PATCHes nodes/status without reading it."""
        import http.client
        import ssl

        slug = cn.replace(":", "-")
        context = ssl.create_default_context(cadata=self.cas["server-ca"].cert)
        context.load_cert_chain(self.root / f"users/{slug}.crt", self.root / f"users/{slug}.key")
        conn = http.client.HTTPSConnection(self.address, self.api_port, context=context, timeout=60)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": content_type, "Accept": "application/json"})
            res = conn.getresponse()
            text = res.read().decode()
        finally:
            conn.close()
        return res.status, json.loads(text) if text.startswith("{") else {"raw": text}

    def share(self, directory: Path) -> "ControlPlane":
        """The handle the stand-in k3s reads on the test machines (tests/standin/k3s.py: the real
        API): the API's URL, its CA, the client CA (the supervisor signs kubelet certificates with
        it) and the admin's credentials."""
        directory.mkdir(parents=True, exist_ok=True)
        admin = self.root / "users/system-admin"
        for name, text, mode in (("server-ca.crt", self.cas["server-ca"].cert, 0o644),
                                 ("client-ca.crt", self.cas["client-ca"].cert, 0o644),
                                 ("client-ca.key", self.cas["client-ca"].key, 0o600),
                                 ("admin.crt", admin.with_suffix(".crt").read_text(), 0o644),
                                 ("admin.key", admin.with_suffix(".key").read_text(), 0o600),
                                 ("admin.kubeconfig", self.admin().read_text(), 0o600),
                                 ("server", self.server + "\n", 0o644)):  # last: the nodes wait for it
            path = directory / name
            path.unlink(missing_ok=True)  # created with its mode: a key is never readable by others
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
                f.write(text)
            path.chmod(mode)  # (the umask)
        return self

    # ------------------------------------------------------------------ processes

    def start(self) -> "ControlPlane":
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self._apiserver(self._etcd())
        self.timings["kube-apiserver ready"] = time.monotonic() - began
        self._controller_manager()
        if not self.wait_for_controllers:
            return self
        # The controller manager is up when it made the default namespace's ServiceAccount (pods
        # are refused without it).
        self._wait("kube-controller-manager", lambda: self.kubectl(
            self.admin(), "get", "serviceaccount", "default", "-n", "default", "-o", "name", timeout=20).returncode == 0)
        self.timings["kube-controller-manager ready"] = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Every process killed: nothing of a test cluster is kept (kube-apiserver's graceful
        termination alone takes ~30 s)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()[-3000:]

    def _wait(self, name: str, ready) -> None:
        def check():
            if self.procs[name].poll() is not None:
                log = self.log(name)
                error = PortTaken if "address already in use" in log else RuntimeError
                raise error(f"{name} exited {self.procs[name].returncode}: {log}")
            try:
                return ready()
            except subprocess.TimeoutExpired:
                return False
        poll(check, START_TIMEOUT, f"{name} ready (log: {self.root / (name + '.log')})")

    def _launch(self, name: str, count: int, argv, ready) -> list[int]:
        """Start `name` with `argv(ports)` on `count` ports free on the address and wait for
        `ready(ports)`. A port free when chosen may be bound by another process before `name`
        binds it (seen in CI: etcd's peer port, milliseconds later); `name` then starts again on
        new ports, and who held the port is kept in port-races.log."""
        for attempt in range(PORT_ATTEMPTS):
            ports = free_ports(self.address, count) if count else []
            self._spawn(name, argv(ports))
            try:
                self._wait(name, lambda: ready(ports))
                return ports
            except PortTaken as race:
                holders = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True).stdout.splitlines()
                with open(self.root / "port-races.log", "a") as out:
                    out.write(f"{name} attempt {attempt + 1} on {self.address} {ports}:\n" + "".join(
                        f"  {line}\n" for line in holders if any(f":{port} " in line for port in ports)))
                if not count or attempt + 1 == PORT_ATTEMPTS:
                    raise RuntimeError(f"{race} (holders: {self.root / 'port-races.log'})") from None
        raise AssertionError("unreachable")

    def _etcd(self) -> str:
        """etcd with TLS and client certificates from the stack's etcd server CA (as k3s' embedded
        etcd: pkg/etcd/etcd.go, listen on https with ClientCertAuth)."""
        ca = self.file("etcd/server-ca.crt", self.cas["etcd/server-ca"].cert, 0o644)
        crt, key = self.pair("etcd/server", pki.leaf(self.cas["etcd/server-ca"], "etcd", client=True, server=True,
                                                      names=(self.address, "localhost")))
        data = self.root / "etcd/data"

        def argv(ports: list[int]) -> list[str]:
            port, peer, metrics = ports
            url, peer_url = f"https://{self.address}:{port}", f"http://{self.address}:{peer}"
            shutil.rmtree(data, ignore_errors=True)  # a lost race's start may have begun it
            return [str(self.bin / "etcd"), "--name", "default", "--data-dir", str(data),
                    "--listen-client-urls", url, "--advertise-client-urls", url,
                    "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                    "--initial-cluster", f"default={peer_url}",
                    "--cert-file", crt, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
                    "--listen-metrics-urls", f"http://{self.address}:{metrics}"]

        port, _, _ = self._launch("etcd", 3, argv, lambda ports: port_open(self.address, ports[0]))
        return f"https://{self.address}:{port}"

    def api_args(self, etcd_url: str) -> list[str]:
        """kube-apiserver's flags as k3s sets them (server.go, apiServer and setupStorageBackend)."""
        cas = {name: self.pair(f"tls/{name}", pair) for name, pair in self.cas.items()}
        serving = self.pair("tls/serving-kube-apiserver", pki.leaf(
            self.cas["server-ca"], "kube-apiserver", client=False, server=True,
            names=("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                   "localhost", self.address, *self.tls_sans)))
        kubelet_client = self.pair("tls/client-kube-apiserver", pki.leaf(self.cas["client-ca"], "system:apiserver",
                                                                         ("system:masters",)))
        proxy = self.pair("tls/client-auth-proxy", pki.leaf(self.cas["request-header-ca"], "system:auth-proxy"))
        etcd_client = self.pair("tls/etcd/client", pki.leaf(self.cas["etcd/server-ca"], "etcd-client"))
        service_key = self.file("tls/service.key", pki.ca("service-account").key)
        encryption = self.file("cred/encryption-config.json", json.dumps(encryption_config()))
        flags = {
            "storage-backend": "etcd3", "etcd-servers": etcd_url, "etcd-cafile": cas["etcd/server-ca"][0],
            "etcd-certfile": etcd_client[0], "etcd-keyfile": etcd_client[1],
            "cert-dir": str(self.root / "tls/temporary-certs"), "allow-privileged": "true",
            "enable-bootstrap-token-auth": "true", "authorization-mode": "Node,RBAC",
            "service-account-signing-key-file": service_key, "service-cluster-ip-range": self.service_cidr,
            "service-node-port-range": "30000-32767", "advertise-address": self.address,
            "secure-port": str(self.api_port), "bind-address": self.address,
            "tls-cert-file": serving[0], "tls-private-key-file": serving[1], "service-account-key-file": service_key,
            "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
            "api-audiences": "https://kubernetes.default.svc.cluster.local,k3s",
            "kubelet-certificate-authority": cas["server-ca"][0], "kubelet-client-certificate": kubelet_client[0],
            "kubelet-client-key": kubelet_client[1], "requestheader-client-ca-file": cas["request-header-ca"][0],
            "requestheader-allowed-names": "system:auth-proxy", "proxy-client-cert-file": proxy[0],
            "proxy-client-key-file": proxy[1], "requestheader-extra-headers-prefix": "X-Remote-Extra-",
            "requestheader-group-headers": "X-Remote-Group", "requestheader-username-headers": "X-Remote-User",
            "client-ca-file": cas["client-ca"][0], "enable-admission-plugins": "NodeRestriction",
            "anonymous-auth": "false", "profiling": "false", "encryption-provider-config": encryption,
        }
        return [f"--{k}={v}" for k, v in flags.items()] + list(self.extra_api_args)

    def _apiserver(self, etcd_url: str) -> None:
        """On the port given (a fleet's: 6443) or on one chosen free."""
        fixed = bool(self.api_port)

        def argv(ports: list[int]) -> list[str]:
            self.api_port = self.api_port if fixed else ports[0]
            self.user("system:admin", "system:masters")  # k3s.yaml, naming the server
            return [str(self.bin / "kube-apiserver"), *self.api_args(etcd_url)]

        self._launch("kube-apiserver", 0 if fixed else 1, argv, lambda _: self.kubectl(
            self.admin(), "get", "--raw", "/readyz", timeout=20).stdout.strip() == "ok")

    def _controller_manager(self) -> None:
        """k3s' controllerManager flags; its own cloud controller runs the service, route and cloud
        node lifecycle controllers, so those are off here as they are in k3s."""
        me = self.user("system:kube-controller-manager")
        cas = {name: (str(self.root / f"tls/{name}.crt"), str(self.root / f"tls/{name}.key")) for name in self.cas}
        flags = {
            "kubeconfig": me, "authorization-kubeconfig": me, "authentication-kubeconfig": me,
            "service-account-private-key-file": str(self.root / "tls/service.key"), "allocate-node-cidrs": "true",
            "service-cluster-ip-range": self.service_cidr, "cluster-cidr": self.cluster_cidr,
            "root-ca-file": cas["server-ca"][0], "profiling": "false", "bind-address": self.address,
            "use-service-account-credentials": "true",
            "cluster-signing-kube-apiserver-client-cert-file": cas["client-ca"][0],
            "cluster-signing-kube-apiserver-client-key-file": cas["client-ca"][1],
            "cluster-signing-kubelet-client-cert-file": cas["client-ca"][0],
            "cluster-signing-kubelet-client-key-file": cas["client-ca"][1],
            "cluster-signing-kubelet-serving-cert-file": cas["server-ca"][0],
            "cluster-signing-kubelet-serving-key-file": cas["server-ca"][1],
            "cluster-signing-legacy-unknown-cert-file": cas["client-ca"][0],
            "cluster-signing-legacy-unknown-key-file": cas["client-ca"][1],
            "configure-cloud-routes": "false", "controllers": "*,tokencleaner,-service,-route,-cloud-node-lifecycle",
        }
        if self.node_monitor_grace_s is not None:
            flags["node-monitor-grace-period"] = f"{self.node_monitor_grace_s:g}s"
        self._launch("kube-controller-manager", 1, lambda ports: [
            str(self.bin / "kube-controller-manager"), *(f"--{k}={v}" for k, v in flags.items()),
            f"--secure-port={ports[0]}"], lambda ports: port_open(self.address, ports[0]))
