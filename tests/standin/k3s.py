#!/usr/bin/python3
# Stand-in k3s: `k3s server|agent ARGS...` and the `k3s kubectl` calls flakefleet makes.
#
# Every start is logged to /var/lib/flakefleet/standin-k3s.log with the drop-in a real k3s would
# read and the images its containerd would import; a server writes a kubeconfig and keeps etcd
# data in /var/lib/rancher/k3s/server/db; `--cluster-reset` resets and exits, as k3s does.
#
# Under systemd (the nspawn test machines) it runs as k3s does in nixpkgs' unit
# (nixos/modules/services/cluster/rancher/default.nix: Type=notify for a server, exec for an
# agent, Restart=always, RestartSec=5s, TimeoutStartSec=0): a server tells systemd READY=1 once up;
# both register their Node and renew its Lease in kube-node-lease, as the kubelet does (every 10
# s by default; `lease_renew_s` of the shared directory's config.json), names in `notready`
# reporting Ready=False. Every machine of a test fleet shares a directory
# (/var/lib/standin-apiserver) for what is k3s' own (cacerts, the etcd members, learners, faults).
# When the fleet's harness runs a real control plane, its handle is that directory's kube/ and
# the Kubernetes API is the real one (see "the real API" below: every test machine fleet has one
# now). Without it, the API is the directory's nodes/<name>.json, pods/ and pdbs/ as described
# below: a likeness tests/test_kube_api.py holds to the real API's answers. A Node is then Ready
# while its Lease is younger than the grace period (`grace_s`, default 40 s), Unknown after it.
# Without systemd (the namespace test hosts) a start is logged and returns; Nodes are then the
# names in /etc/flakefleet/standin-nodes, all Ready but those in /etc/flakefleet/standin-notready.
#
# Under systemd, the cluster's trust as k3s keeps it:
#   - a server uses a CA whose certificate and key both exist in its tls directory, else makes one
#     (pkg/daemons/control/deps/deps.go, createSigningCertKey); the first server's server CA is the
#     cluster's (the API server directory's `cacerts`, what k3s serves at /cacerts); a joining
#     server takes the cluster's (its bootstrap data);
#   - a running server writes its server token in secure format to /var/lib/rancher/k3s/server/token
#     (docs.k3s.io/cli/token), K10<hash>::server:<password>, the hash being the SHA256 of the
#     one-certificate bundle's bytes (pkg/clientaccess/token.go, hashCA);
#   - a joining node (an agent, or a server with `server` in its drop-in) given a secure token
#     checks the cluster's CA against the token's hash before anything else and stops with
#     "token CA hash does not match the Cluster CA certificate hash: X != Y" (token.go).
#
# Under systemd, etcd membership as k3s keeps it: a running server is a member named
# `<node>-<8 hex>` (pkg/etcd/etcd.go, setName: kept in db/etcd/name, a new one after a reset),
# kept in the API server directory's members/; deleting a server's Node removes its member
# (pkg/etcd/member_controller.go, OnRemove: RemovePeer) unless the Node is named in the
# directory's `members-kept` (a fault: the controller did not); `--cluster-reset` leaves a
# cluster of this server alone (a removed member's own refusal to start again, etcd's "the
# member has been permanently removed from the cluster", is not restated). The supervisor's
# /db/info (etcd.go, infoHandler; served to the `k3s:server` role, pkg/server/router.go) is what
# `curl` on a stand-in system answers: the one request flakefleet makes there, with the server
# token's password, from this server's token file.
#
# Under systemd, who may do what, as the API server decides it. A running node (server or agent)
# writes the kubelet's kubeconfig, /var/lib/rancher/k3s/agent/kubelet.kubeconfig (k3s
# pkg/agent/config/config.go), whose client certificate names `system:node:<name>`; `k3s kubectl
# --kubeconfig` that file acts as that node, without it as the admin (/etc/rancher/k3s/k3s.yaml).
# A node identity may only (kubernetes plugin/pkg/auth/authorizer/node/node_authorizer.go and
# rbac/bootstrappolicy/policy.go, NodeRules; plugin/pkg/admission/noderestriction/admission.go):
#   - read its own Node (get by name), patch its own Node, never delete a Node;
#   - list pods with the field selector spec.nodeName=<itself>;
#   - evict pods bound to itself (admitPodEviction).
# Pods are the API server directory's pods/<namespace>/<name>.json (the objects, as tests or a
# scheduler would put them); PodDisruptionBudgets its pdbs/<namespace>/<name>.json. An eviction
# (pkg/registry/core/pod/storage/eviction.go) of a pod that one budget selects (matchLabels)
# is refused with 429 TooManyRequests while the budget's status.disruptionsAllowed is 0, else
# decrements it and deletes the pod; a pod two budgets select is refused with a 500; a pod that
# is Pending, terminal or being deleted is evicted whatever its budgets (canIgnorePDB). A query
# for exactly one Node by name answers that Node, not a List, as kubectl prints it.
#
# Faults, from /etc/flakefleet/standin-fault (lines "<fault> <toplevel>", for the running system):
#   crashloop     exits 1 a second after starting, every start (systemd restarts it)
#   hang          never becomes ready (a server's start job never ends: TimeoutStartSec=0)
#   no-heartbeat  runs and reports ready, but never renews its Lease (the kubelet is stuck)
import base64
import datetime
import json
import os
import signal
import socket
import sys
import time

LOG = "/var/lib/flakefleet/standin-k3s.log"
DROP_IN = "/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml"
API = "/var/lib/standin-apiserver"
KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
# Without an API server directory (the namespace test hosts): the Nodes that exist, and those not Ready.
NODES_FILE = "/etc/flakefleet/standin-nodes"
NOTREADY_FILE = "/etc/flakefleet/standin-notready"


def now():
    return f"{time.time():.9f}"


def log(line):
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    with open(LOG, "a") as f:
        f.write(f"{now()} {line}\n")


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def api_config():
    config = {"lease_renew_s": 10.0, "grace_s": 40.0}
    config.update(json.loads(read(os.path.join(API, "config.json"), "{}")))
    return config


def faults():
    system = os.path.realpath("/run/current-system")
    lines = read("/etc/flakefleet/standin-fault").splitlines()
    return {l.split()[0] for l in lines if len(l.split()) == 2 and l.split()[1] == system}


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_path(name):
    return os.path.join(API, "nodes", f"{name}.json")


def write_node(name, **fields):
    """Change a Node's fields, read and written under the API directory's lock: a kubelet's Lease
    renewal and a cordon from another machine never lose each other's change (the real API
    server refuses a stale write by its resourceVersion)."""
    import fcntl
    os.makedirs(os.path.join(API, "nodes"), exist_ok=True)
    with open(os.path.join(API, "nodes", ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        node = json.loads(read(node_path(name), "{}")) or {"name": name, "unschedulable": False}
        node.update(fields)
        tmp = node_path(name) + f".{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(node, f)
        os.rename(tmp, node_path(name))


def provider_id(name):
    """The Node's spec.providerID: the kubelet's `--provider-id` when given (here as k3s'
    `kubelet-arg` in the drop-in); else the one k3s' embedded cloud controller sets, `k3s://<name>`
    (k8s.io/cloud-provider controllers/node: set only while the Node has none)."""
    try:
        args = json.loads(read(DROP_IN, "{}") or "{}").get("kubelet-arg") or []
    except ValueError:
        args = []
    given = [a.split("=", 1)[1] for a in args if a.startswith("provider-id=")]
    return given[-1] if given else f"k3s://{name}"


def write_kubeconfig():
    os.makedirs("/var/lib/rancher/k3s/server/db/etcd", exist_ok=True)  # a server keeps etcd here
    if os.path.isdir(KUBE_LOCAL):  # a real API: its admin's kubeconfig, once it is up (`detached`)
        return
    os.makedirs(os.path.dirname(KUBECONFIG), exist_ok=True)
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    old = os.umask(0o077)
    with open(KUBECONFIG, "w") as f:
        f.write(f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {b64('STANDIN-CA ' + socket.gethostname())}
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {b64('STANDIN-CLIENT-CERT')}
    client-key-data: {b64('STANDIN-CLIENT-KEY')}
""")
    os.umask(old)


KUBELET_KUBECONFIG = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig"


def write_kubelet_kubeconfig(name):
    """The kubelet's kubeconfig as a k3s node has it: through the agent's load balancer, with the
    node's client certificate (CN system:node:<name>, O system:nodes)."""
    agent = os.path.dirname(KUBELET_KUBECONFIG)
    os.makedirs(agent, exist_ok=True)
    old = os.umask(0o077)
    with open(os.path.join(agent, "client-kubelet.crt"), "w") as f:
        f.write(f"-----BEGIN CERTIFICATE-----\nstandin CN=system:node:{name} O=system:nodes\n-----END CERTIFICATE-----\n")
    with open(KUBELET_KUBECONFIG, "w") as f:
        f.write(f"""apiVersion: v1
clusters:
- cluster:
    server: https://127.0.0.1:6444
    certificate-authority: {agent}/server-ca.crt
  name: local
contexts:
- context:
    cluster: local
    namespace: default
    user: user
  name: Default
current-context: Default
kind: Config
preferences: {{}}
users:
- name: user
  user:
    client-certificate: {agent}/client-kubelet.crt
    client-key: {agent}/client-kubelet.key
""")
    os.umask(old)


def identity(kubeconfig):
    """The user a kubeconfig's client certificate names (the CN); the admin's has none here."""
    import re
    text = read(kubeconfig)
    found = re.search(r"client-certificate: (\S+)", text)
    cert = read(found.group(1)) if found else ""
    cn = re.search(r"CN=(\S+)", cert)
    return cn.group(1) if cn else "system:admin"


def notify(message):
    """sd_notify(3): a datagram to $NOTIFY_SOCKET (NotifyAccess=main: from this, the main process)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(message.encode())


def node_name(args):
    """The drop-in's node-name (JSON is YAML), else the hostname, as k3s names its Node."""
    try:
        return json.loads(read(DROP_IN, "{}")).get("node-name") or socket.gethostname()
    except ValueError:
        return socket.gethostname()


TLS = "/var/lib/rancher/k3s/server/tls"
SERVER_TOKEN = "/var/lib/rancher/k3s/server/token"


def option(args, name):
    """An option's value from k3s' arguments (`--name value` or `--name=value`)."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def parse_token(token):
    """(CA hash, user, password) as k3s' parseToken splits a token (pkg/clientaccess/token.go):
    a bare password, or K10<hash>::<user>:<password>; ValueError with k3s' message otherwise."""
    if not token:
        raise ValueError("token must not be empty")
    if not token.startswith("K10"):
        return "", "", token
    parts = token[3:].split("::", 1)
    digest, creds = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
    if digest and len(digest) != 64:
        raise ValueError("invalid token CA hash length")
    user, sep, password = creds.partition(":")
    if not sep or not password:
        raise ValueError("invalid token format")
    return digest, user, password


def trust(role, args):
    """The CA and token rules above; returns an error message, or None."""
    import hashlib
    token = read(option(args, "--token-file") or "/nonexistent").strip()
    joining = role == "agent" or "server" in json.loads(read(DROP_IN, "{}") or "{}")
    if not token and not joining:  # the first server makes a random one (deps.go, getServerPass)
        token = f"standin{time.time()}"
    try:
        want, _, password = parse_token(token)
    except ValueError as err:
        return str(err)
    cacerts = os.path.join(API, "cacerts")
    if joining:
        have = hashlib.sha256(read(cacerts).encode()).hexdigest()
        if want and want != have:
            return f"token CA hash does not match the Cluster CA certificate hash: {want} != {have}"
    if role != "server":
        return None
    os.makedirs(os.path.join(TLS, "etcd"), exist_ok=True)
    crt, key = os.path.join(TLS, "server-ca.crt"), os.path.join(TLS, "server-ca.key")
    if joining and read(cacerts):
        with open(crt, "w") as f:
            f.write(read(cacerts))
    elif not (os.path.exists(crt) and os.path.exists(key)):
        with open(key, "w") as f:
            f.write(f"-----BEGIN EC PRIVATE KEY-----\nstandin {time.time()}\n-----END EC PRIVATE KEY-----\n")
        with open(crt, "w") as f:
            f.write(f"-----BEGIN CERTIFICATE-----\nstandin-server-ca@{int(time.time())}\n-----END CERTIFICATE-----\n")
    if not joining:
        with open(cacerts, "w") as f:
            f.write(read(crt))
    digest = hashlib.sha256(read(crt).encode()).hexdigest()
    with open(SERVER_TOKEN, "w") as f:
        f.write(f"K10{digest}::server:{password}\n")
    return None


ETCD_NAME = "/var/lib/rancher/k3s/server/db/etcd/name"


def member_path(name):
    return os.path.join(API, "members", f"{name}.json")


def member_name(node):
    """This server's etcd member name, made once as k3s' setName makes it."""
    name = read(ETCD_NAME).strip()
    if not name:
        import uuid
        name = f"{node}-{uuid.uuid4().hex[:8]}"
        os.makedirs(os.path.dirname(ETCD_NAME), exist_ok=True)
        with open(ETCD_NAME, "w") as f:
            f.write(name)
    return name


def join_etcd(node):
    """A running server's member in the API server directory (its peer URL from the node IP)."""
    try:
        ip = json.loads(read(DROP_IN, "{}") or "{}").get("node-ip") or "127.0.0.1"
    except ValueError:
        ip = "127.0.0.1"
    name = member_name(node)
    os.makedirs(os.path.join(API, "members"), exist_ok=True)
    with open(member_path(name), "w") as f:
        json.dump({"ID": int.from_bytes(name.encode()[-8:], "big"), "name": name,
                   "peerURLs": [f"https://{ip}:2380"], "clientURLs": [f"https://{ip}:2379"]}, f)


def remove_members(node):
    """k3s' member controller on the removal of `node`'s Node (RemovePeer by its member name)."""
    if node in set(read(os.path.join(API, "members-kept")).split()):
        return
    directory = os.path.join(API, "members")
    for entry in os.listdir(directory) if os.path.isdir(directory) else ():
        if entry.rpartition("-")[0] == node:
            os.unlink(os.path.join(directory, entry))


def db_info(args):
    """`curl ... -K - https://127.0.0.1:6443/db/info` with `user = "server:<password>"` on stdin:
    the member list, for the server token's password only (as curl --fail reports a 401)."""
    if args[-1:] != ["https://127.0.0.1:6443/db/info"] or "-K" not in args:
        print(f"stand-in curl: unsupported: {' '.join(args)}", file=sys.stderr)
        return 2
    log("curl /db/info")
    if not os.path.exists(KUBECONFIG):
        print("curl: (7) Failed to connect to 127.0.0.1 port 6443 after 0 ms: Couldn't connect to server", file=sys.stderr)
        return 7
    import re
    given = re.fullmatch(r'user = "server:((?:[^"\\]|\\.)*)"\n?', sys.stdin.read())
    try:
        want = parse_token(read(SERVER_TOKEN).strip())[2]
    except ValueError:
        want = None
    if not given or want is None or re.sub(r"\\(.)", r"\1", given.group(1)) != want:
        print("curl: (22) The requested URL returned error: 401", file=sys.stderr)
        return 22
    directory = os.path.join(API, "members")
    members = [json.loads(read(os.path.join(directory, e))) for e in sorted(os.listdir(directory))] \
        if os.path.isdir(directory) else []
    learners = set(read(os.path.join(API, "learners")).split())
    for m in members:
        if m["name"].rpartition("-")[0] in learners:
            m["isLearner"] = True
    print(json.dumps({"members": members}))
    return 0


def own_version():
    """The kubelet version this k3s reports (`v1.31.2+k3s1`), from its store path's name."""
    import re
    found = re.search(r"-k3s-(\d+\.\d+\.\d+\+k3s\d+)", os.path.realpath(__file__))
    return f"v{found.group(1)}" if found else ""


# ------------------------------------------------------------------ the real API (systemd machines)
#
# On the systemd test machines the fleet's harness runs a real control plane (tests/kube/:
# etcd, kube-apiserver and kube-controller-manager at the flake's k3s' Kubernetes release, with
# k3s' flags, from the stack's CAs) and shares its handle in the API server directory's kube/:
# `server` (its URL), the server CA, the client CA with its key, the admin's kubeconfig. Then:
#   - `k3s kubectl` is the real kubectl (bind-mounted at /opt/kubernetes/bin), with k3s' default
#     kubeconfig (/etc/rancher/k3s/k3s.yaml, the admin's, written by a server) or the one given;
#   - a running node is its own kubelet toward that API, with its own credentials
#     (system:node:<name>, a client certificate the client CA signs, as k3s' supervisor signs the
#     kubelet's: pkg/server/router.go, servingKubeletCert/clientKubeletCert): it registers its Node
#     (kubelet_node_status.go: labels from --node-label, taints from --node-taint, providerID),
#     PATCHes nodes/status and renews its Lease every `lease_renew_s`, reports its pods Running
#     and finishes the ones being deleted (status_manager.go);
#   - a server labels its Node as k3s does (node-role.kubernetes.io/control-plane, etcd, master)
#     and sets EtcdIsVoter (pkg/etcd/etcd.go, setEtcdStatusCondition; False for `learners`), with
#     the admin's credentials; deleting a Node through `k3s kubectl` removes its etcd member (the
#     member controller, as above).
# The node lifecycle controller (kube-controller-manager) marks a Node Unknown once its kubelet
# stopped for the grace period: that is the real one now.
KUBECTL = "/opt/kubernetes/bin/kubectl"
AGENT = "/var/lib/rancher/k3s/agent"
# Without systemd (the namespace hosts), a harness that runs a real API for them (`make demo`)
# puts its handle in this host-private directory, and `kubectl` there names the kubectl binary.
# While the directory is empty the API is coming: a server writes no k3s.yaml (k3s writes it once
# its API server is up) and `k3s kubectl` is refused; a start runs k3s detached, as systemd would
# run it, and that process waits for the handle, then is the node's kubelet (`detached` below).
KUBE_LOCAL = "/etc/flakefleet/standin-kube"
PIDFILE = "/run/standin-k3s.pid"


def kube(name):
    return os.path.join(KUBE_LOCAL if os.path.isdir(KUBE_LOCAL) else os.path.join(API, "kube"), name)


def kubectl_binary():
    return read(kube("kubectl")).strip() or KUBECTL


def real_api():
    return os.path.exists(kube("server"))


def kube_config(server, ca, crt, key):
    return json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "default",
                       "clusters": [{"name": "default", "cluster": {"server": server, "certificate-authority": ca}}],
                       "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
                       "users": [{"name": "default", "user": {"client-certificate": crt, "client-key": key}}]})


def issue(cn, org, crt, key):
    """A client certificate from the cluster's client CA (what k3s' supervisor hands a node)."""
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    ca_cert = x509.load_pem_x509_certificate(read(kube("client-ca.crt")).encode())
    ca_key = serialization.load_pem_private_key(read(kube("client-ca.key")).encode(), None)
    mine = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                     x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(mine.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=365))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(os.path.dirname(crt), exist_ok=True)
    old = os.umask(0o077)
    with open(key, "wb") as f:
        f.write(mine.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()))
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.umask(old)


CONNECTIONS = {}  # who -> an open HTTPS connection (a kubelet keeps one, as client-go does)


def connect(who):
    import http.client
    import ssl
    import urllib.parse
    url = urllib.parse.urlsplit(read(kube("server")).strip())
    context = ssl.create_default_context(cafile=kube("server-ca.crt"))
    if who == "admin":
        context.load_cert_chain(kube("admin.crt"), kube("admin.key"))
    else:
        context.load_cert_chain(f"{AGENT}/client-kubelet.crt", f"{AGENT}/client-kubelet.key")
    return http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=30)


def call(method, path, body=None, who="kubelet", ctype="application/strategic-merge-patch+json"):
    """One request to the real API as the kubelet (its own certificate) or the admin: (status, dict)."""
    import http.client
    for attempt in (0, 1):  # a kept connection the server closed meanwhile: once more on a new one
        conn = CONNECTIONS.get(who) or CONNECTIONS.setdefault(who, connect(who))
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"Content-Type": ctype, "Accept": "application/json"})
            res = conn.getresponse()
            text = res.read().decode()
            return res.status, (json.loads(text) if text.startswith("{") else {})
        except (OSError, http.client.HTTPException):
            CONNECTIONS.pop(who).close()
            if attempt:
                raise


def flag_values(args, name):
    """Every value of a repeated k3s flag (`--name=v`, `--name v`), args then drop-in."""
    found = [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
    found += [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]
    try:
        extra = json.loads(read(DROP_IN, "{}") or "{}").get(name.lstrip("-")) or []
    except ValueError:
        extra = []
    return found + (extra if isinstance(extra, list) else [extra])


def kubelet_start(name, role, args):
    """The kubelet's credentials and kubeconfig, then its Node (registered once)."""
    issue(f"system:node:{name}", "system:nodes", f"{AGENT}/client-kubelet.crt", f"{AGENT}/client-kubelet.key")
    with open(KUBELET_KUBECONFIG, "w") as f:
        f.write(kube_config(read(kube("server")).strip(), kube("server-ca.crt"), f"{AGENT}/client-kubelet.crt",
                            f"{AGENT}/client-kubelet.key"))
    register(name, args)


def admin_kubeconfig():
    """k3s.yaml on a server: the admin's kubeconfig for the real API (mode 0600, as
    --write-kubeconfig-mode=0600 asks)."""
    old = os.umask(0o077)
    with open(KUBECONFIG, "w") as f:
        f.write(read(kube("admin.kubeconfig")))
    os.umask(old)


def register(name, args):
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
    labels.update(dict(l.split("=", 1) for l in flag_values(args, "--node-label") if "=" in l))
    taints = []
    for t in flag_values(args, "--node-taint"):
        kv, _, effect = t.rpartition(":")
        key, _, value = kv.partition("=")
        taints.append({"key": key, "effect": effect, **({"value": value} if value else {})})
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"providerID": provider_id(name), **({"taints": taints} if taints else {})}}
    code, answer = call("POST", "/api/v1/nodes", node, ctype="application/json")
    if code == 409:
        # A Node registered by an earlier start: k3s applies its --node-label values again once the
        # kubelet is up, merged over the Node's labels (pkg/agent/run.go, configureNode and
        # updateMutableLabels), with its own controller credentials (here the admin's).
        code, answer = call("PATCH", f"/api/v1/nodes/{name}", {"metadata": {"labels": labels}}, who="admin",
                            ctype="application/merge-patch+json")
    if code not in (200, 201):
        log(f"kubelet: registering {name}: {code} {answer.get('message', '')}")


LABELLED = []  # the server's labels set (once a start)
VOTER = {}  # the EtcdIsVoter status last written


def beat(name, role):
    """One kubelet sync: status, Lease, pods; a server's labels and EtcdIsVoter as k3s sets them."""
    stamp = rfc3339(time.time())
    ready = name not in not_ready()
    condition = {"type": "Ready", "status": "True" if ready else "False", "lastHeartbeatTime": stamp,
                 "reason": "KubeletReady" if ready else "KubeletNotReady",
                 "message": "kubelet is posting ready status" if ready else "container runtime is down"}
    # The addresses as the kubelet sets them from --node-ip (pkg/kubelet/nodestatus/setters.go, NodeAddress).
    addresses = [{"type": "InternalIP", "address": ip} for ip in flag_values([], "--node-ip")[:1]]
    status = {"status": {"conditions": [condition], "nodeInfo": {"kubeletVersion": own_version()},
                         "addresses": addresses + [{"type": "Hostname", "address": name}]}}
    code, _ = call("PATCH", f"/api/v1/nodes/{name}/status", status)
    if code == 404:  # deleted while it runs: registered again, as the stand-in always did
        register(name, [])
        LABELLED.clear()
        VOTER.clear()
        return
    if role == "server" and not LABELLED:
        code, _ = call("PATCH", f"/api/v1/nodes/{name}", {"metadata": {"labels": {
            "node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/etcd": "true",
            "node-role.kubernetes.io/master": "true"}}}, who="admin", ctype="application/merge-patch+json")
        if code == 200:
            LABELLED.append(name)
    if role == "server":
        learner = name in set(read(os.path.join(API, "learners")).split())
        voter = {"type": "EtcdIsVoter", "status": "False" if learner else "True",
                 "reason": "MemberIsLearner" if learner else "MemberNotLearner",
                 "message": "Node has not been promoted to voting member of the etcd cluster" if learner
                 else "Node is a voting member of the etcd cluster"}
        if VOTER.get(name) != voter["status"]:  # k3s' controller writes it when it changes
            code, _ = call("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"conditions": [voter]}}, who="admin")
            VOTER[name] = voter["status"] if code == 200 else None
    # The Lease last: whoever sees it renewed after a start sees that start's conditions too.
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": name, "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": stamp}}
    call("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}?fieldManager=kubelet&force=true",
         lease, ctype="application/apply-patch+yaml")
    code, pods = call("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{name}")
    for pod in pods.get("items", []) if code == 200 else []:
        meta = pod["metadata"]
        where = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            call("DELETE", where, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
                 ctype="application/json")
        elif pod.get("status", {}).get("phase") in (None, "", "Pending") \
                and not (meta.get("annotations") or {}).get("test/pending"):
            call("PATCH", where + "/status", {"status": {"phase": "Running", "startTime": stamp,
                                                          "conditions": [{"type": "Ready", "status": "True"}]}})


def real_kubectl(args):
    """`k3s kubectl ARGS`: the real kubectl; deleting a Node also removes its etcd member."""
    import subprocess
    kubeconfig = option(args, "--kubeconfig") or KUBECONFIG
    rest, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--kubeconfig":
            skip = True
        elif not a.startswith("--kubeconfig="):
            rest.append(a)
    argv = [kubectl_binary(), "--kubeconfig", kubeconfig, *rest]
    words = [a for a in rest if not a.startswith("-")]
    if words[:2] != ["delete", "node"]:
        os.execv(argv[0], argv)
    code = subprocess.run(argv).returncode
    if code == 0:
        for node in words[2:]:
            remove_members(node)
    return code


def run(role, args):
    """The daemon under systemd: ready, then a Lease renewed every `lease_renew_s`."""
    fault = faults()
    if os.path.isdir(API) and (problem := trust(role, args)):
        log(f"refused: {problem}")
        print(problem, file=sys.stderr)
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    name = node_name(args)
    if "hang" in fault:
        while True:
            time.sleep(3600)
    started = time.time()
    real = real_api()
    if real and role == "server":
        admin_kubeconfig()
    if real and "no-heartbeat" not in fault:
        kubelet_start(name, role, args)
        beat(name, role)
    elif os.path.isdir(API) and "no-heartbeat" not in fault:
        write_node(name, registered=started, status_time=started, renewTime=started, role=role, kubelet=own_version(),
                   provider_id=provider_id(name))
    if os.path.isdir(API) and role == "server":
        join_etcd(name)
    if os.path.isdir(API) and not real:
        write_kubelet_kubeconfig(name)
    notify("READY=1")
    while True:
        time.sleep(1.0 if "crashloop" in fault else api_config()["lease_renew_s"])
        if "crashloop" in fault:
            sys.exit(1)
        if real and "no-heartbeat" not in fault:
            try:
                beat(name, role)
            except OSError as err:  # the API is gone (the fleet stopping): a kubelet keeps trying
                log(f"kubelet: {err}")
        elif os.path.isdir(API) and "no-heartbeat" not in fault:
            write_node(name, renewTime=time.time())  # re-registers a Node deleted while it runs


def start(role, args):
    images = "/var/lib/rancher/k3s/agent/images"
    names = sorted(os.listdir(images)) if os.path.isdir(images) else []
    log(f"start {role} {' '.join(args)} | config {read(DROP_IN).replace(chr(10), '')} | images "
        + "".join(f"{n} " for n in names))
    if "--cluster-reset" in args:  # resets etcd to this member alone (a new name) and exits, as k3s does
        if os.path.isdir(os.path.join(API, "members")):
            for entry in os.listdir(os.path.join(API, "members")):
                os.unlink(os.path.join(API, "members", entry))
        if os.path.exists(ETCD_NAME):
            os.unlink(ETCD_NAME)
        return 0
    if role == "server":
        write_kubeconfig()
    if os.environ.get("INVOCATION_ID") and os.getppid() == 1:  # k3s.service: started by systemd
        run(role, args)
    elif os.path.isdir(KUBE_LOCAL):
        detach(role, args)
    return 0


def detach(role, args):
    """k3s' process on a host without systemd whose harness runs a real API: started again as
    a restart of k3s.service would (the previous one stopped), in its own session, and the start
    returns, as `systemctl start` returns for an exec unit."""
    try:
        os.kill(int(read(PIDFILE).strip()), signal.SIGKILL)
    except (ValueError, OSError):
        pass  # none running
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    with open(PIDFILE, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        detached(role, args)
    finally:
        os._exit(0)


def detached(role, args):
    """The node's kubelet toward the real API once its handle is there (the API may come up after
    the node's first start), as `run` is under systemd: a server's k3s.yaml, then registration and
    a heartbeat every `lease_renew_s`."""
    name = node_name(args)
    while not real_api():
        time.sleep(0.5)
    if role == "server":
        admin_kubeconfig()
    kubelet_start(name, role, args)
    while True:
        try:
            beat(name, role)
        except OSError as err:  # the API is gone (the harness stopping it): a kubelet keeps trying
            log(f"kubelet: {err}")
        time.sleep(api_config()["lease_renew_s"])


# ------------------------------------------------------------------ kubectl


def nodes(asked=()):
    """{name: node} as the API server has them. Without one (the namespace test hosts), every node
    asked for by name exists and heart-beats, and a listing shows the names tests wrote."""
    if not os.path.isdir(API):
        listed = set(read(NODES_FILE).split()) | set(asked)
        return {n: {"name": n, "renewTime": time.time(), "unschedulable": False} for n in listed}
    found = {}
    for entry in os.listdir(os.path.join(API, "nodes")) if os.path.isdir(os.path.join(API, "nodes")) else ():
        if entry.endswith(".json"):
            node = json.loads(read(os.path.join(API, "nodes", entry), "{}") or "{}")
            if node.get("name"):
                found[node["name"]] = node
    return found


def not_ready():
    return set(read(os.path.join(API, "notready") if os.path.isdir(API) else NOTREADY_FILE).split())


def node_json(node):
    age = time.time() - node.get("renewTime", 0)
    if node["name"] in not_ready():
        status, reason = "False", "KubeletNotReady"
    elif age > api_config()["grace_s"]:
        status, reason = "Unknown", "NodeStatusUnknown"
    else:
        status, reason = "True", "KubeletReady"
    condition = {"type": "Ready", "status": status, "reason": reason,
                 "lastHeartbeatTime": rfc3339(node.get("status_time", node.get("renewTime", 0)))}
    conditions = [condition]
    # k3s' etcd member controller on etcd nodes (pkg/etcd/etcd.go, setEtcdStatusCondition): servers
    # (on the namespace hosts, where roles are not known, every node) are voters, but the names
    # in the API server's `learners`, which have not been promoted yet.
    if node.get("role", "server") == "server":
        if node["name"] in set(read(os.path.join(API, "learners")).split()):
            conditions.append({"type": "EtcdIsVoter", "status": "False", "reason": "MemberIsLearner",
                               "message": "Node has not been promoted to voting member of the etcd cluster"})
        else:
            conditions.append({"type": "EtcdIsVoter", "status": "True", "reason": "MemberNotLearner",
                               "message": "Node is a voting member of the etcd cluster"})
    status_ = {"conditions": conditions}
    if node.get("kubelet"):
        status_["nodeInfo"] = {"kubeletVersion": node["kubelet"]}
    spec = {"unschedulable": True} if node.get("unschedulable") else {}
    if node.get("provider_id"):
        spec["providerID"] = node["provider_id"]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node["name"]}, "spec": spec, "status": status_}


def lease_json(node):
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node["name"], "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node["name"], "leaseDurationSeconds": 40, "renewTime": rfc3339(node["renewTime"])}}


VALUED = ("-o", "-n", "--namespace", "--output", "--kubeconfig", "--field-selector", "-p", "--patch", "--type",
          "-f", "--filename", "--raw", "-l", "--selector")


def forbidden(user, verb, resource, name="", why=""):
    """kubectl's line for a 403: RBAC's wording, or an admission plugin's reason."""
    what = f'{resource} "{name}"' if name else resource
    why = why or f'User "{user}" cannot {verb} resource "{resource}" in API group "" at the cluster scope'
    print(f"Error from server (Forbidden): {what} is forbidden: {why}", file=sys.stderr)
    return 1


def pod_path(namespace, name):
    return os.path.join(API, "pods", namespace, f"{name}.json")


def all_pods():
    found = []
    root = os.path.join(API, "pods")
    for namespace in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        for entry in sorted(os.listdir(os.path.join(root, namespace))):
            if entry.endswith(".json"):
                found.append(json.loads(read(os.path.join(root, namespace, entry), "{}") or "{}"))
    return found


def get_pods(args, user, node):
    """`get pods --all-namespaces [--field-selector spec.nodeName=X] -o json`."""
    selector = option(args, "--field-selector") or ""
    bound = selector.removeprefix("spec.nodeName=") if selector.startswith("spec.nodeName=") else None
    if node is not None and bound != node:
        return forbidden(user, "list", "pods", why=f'User "{user}" cannot list resource "pods" in API group "" at the '
                         "cluster scope: can only list/watch pods with spec.nodeName field selector")
    items = [p for p in all_pods() if bound is None or p.get("spec", {}).get("nodeName") == bound]
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return 0


def patch_node(name, args, user, node, known):
    """`patch node NAME --type=merge -p JSON`: spec.unschedulable is what flakefleet patches."""
    if node is not None and name != node:  # NodeRestriction, admitNode
        return forbidden(user, "patch", "nodes", name, f'node "{node}" is not allowed to modify node "{name}"')
    if name not in known:
        print(f'Error from server (NotFound): nodes "{name}" not found', file=sys.stderr)
        return 1
    patch = json.loads(option(args, "-p") or option(args, "--patch") or "{}")
    if "unschedulable" in patch.get("spec", {}):
        write_node(name, unschedulable=bool(patch["spec"]["unschedulable"]))
    print(f"node/{name} patched")
    return 0


def budgets(pod):
    """The PodDisruptionBudgets of the pod's namespace whose matchLabels select it: [(path, pdb)]."""
    namespace = pod["metadata"].get("namespace", "default")
    directory = os.path.join(API, "pdbs", namespace)
    labels = pod["metadata"].get("labels") or {}
    chosen = []
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        pdb = json.loads(read(os.path.join(directory, entry), "{}") or "{}")
        match = pdb.get("spec", {}).get("selector", {}).get("matchLabels") or {}
        if match and all(labels.get(k) == v for k, v in match.items()):
            chosen.append((os.path.join(directory, entry), pdb))
    return chosen


def evict(path, user, node):
    """`create --raw /api/v1/namespaces/NS/pods/NAME/eviction -f -` with an Eviction on stdin."""
    import re
    found = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction", path or "")
    if not found:
        print(f"stand-in kubectl: unsupported raw path {path}", file=sys.stderr)
        return 1
    namespace, name = found.groups()
    json.loads(sys.stdin.read() or "{}")  # the Eviction (its name is the path's)
    pod = json.loads(read(pod_path(namespace, name), "{}") or "{}")
    if not pod:
        print(f'Error from server (NotFound): pods "{name}" not found', file=sys.stderr)
        return 1
    if node is not None and pod.get("spec", {}).get("nodeName") != node:  # NodeRestriction, admitPodEviction
        return forbidden(user, "create", "pods", name, f"node {node} can only evict pods with spec.nodeName set to itself")
    # canIgnorePDB: a pod that is terminal, Pending, or being deleted is evicted whatever its budgets.
    phase = pod.get("status", {}).get("phase", "Pending")
    chosen = [] if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp") \
        else budgets(pod)
    if len(chosen) > 1:
        print("Error from server (InternalError): This pod has more than one PodDisruptionBudget, which the eviction "
              "subresource does not support.", file=sys.stderr)
        return 1
    for budget_path, pdb in chosen:
        allowed = pdb.get("status", {}).get("disruptionsAllowed", 0)
        if allowed == 0:
            log(f"eviction {namespace}/{name} refused: disruption budget {pdb['metadata']['name']}")
            print("Error from server (TooManyRequests): Cannot evict pod as it would violate the pod's disruption "
                  "budget.", file=sys.stderr)
            return 1
        pdb.setdefault("status", {})["disruptionsAllowed"] = allowed - 1
        with open(budget_path, "w") as f:
            json.dump(pdb, f)
    os.unlink(pod_path(namespace, name))
    log(f"eviction {namespace}/{name} done")
    print(json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
    return 0


def kubectl(args):
    log(f"kubectl {' '.join(args)}")
    kubeconfig = option(args, "--kubeconfig") or KUBECONFIG
    if not os.path.exists(kubeconfig):
        if kubeconfig != KUBECONFIG:
            print(f"error: stat {kubeconfig}: no such file or directory", file=sys.stderr)
        else:
            print("The connection to the server 127.0.0.1:6443 was refused", file=sys.stderr)
        return 1
    if real_api():
        return real_kubectl(args)
    user = identity(kubeconfig)
    node = user.removeprefix("system:node:") if user.startswith("system:node:") else None
    words, skip = [], False
    for a in args:  # the positional words: options dropped, and the values of those that take one
        if skip:
            skip = False
        elif a in VALUED:
            skip = True
        elif not a.startswith("-"):
            words.append(a)
    known = nodes(words[2:3] if words[:2] in (["get", "lease"], ["get", "node"]) else words[2:] if words[:2] == ["get", "nodes"] else ())
    if words[:2] == ["get", "pods"]:
        return get_pods(args, user, node)
    if words[:2] == ["patch", "node"]:
        return patch_node(words[2], args, user, node, known)
    if words[:1] == ["create"] and option(args, "--raw"):
        return evict(option(args, "--raw"), user, node)
    named = words[2:] if words[:1] in (["get"], ["delete"]) else words[1:2]
    if node is not None and (words[:2] == ["delete", "node"] or [n for n in named if n != node] or not named):
        verb = "delete" if words[:1] == ["delete"] else "list" if not named else "get"
        return forbidden(user, verb, "nodes", named[0] if named and verb != "list" else "",
                         "" if verb != "get" else f"node '{node}' cannot read '{named[0]}', only its own Node object")
    if words[:2] == ["get", "nodes"]:
        names = words[2:] or sorted(known)
        items = [node_json(known[n]) for n in names if n in known]
        if len(words[2:]) == 1:  # kubectl prints the one object asked for by name (nothing when missing)
            if items:
                print(json.dumps(items[0]))
        else:
            print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    elif words[:2] == ["get", "node"]:
        if words[2] in known:
            print(f"node/{words[2]}")
    elif words[:2] == ["get", "lease"]:
        name = words[2]
        if name in known and "renewTime" in known[name]:
            print(json.dumps(lease_json(known[name])))
        elif "--ignore-not-found" not in args:
            print(f'Error from server (NotFound): leases.coordination.k8s.io "{name}" not found', file=sys.stderr)
            return 1
    elif words[:1] in (["cordon"], ["uncordon"], ["drain"]):
        if os.path.isdir(API) and words[1] in known:
            write_node(words[1], unschedulable=words[0] != "uncordon")
    elif words[:2] == ["delete", "node"]:
        if os.path.isdir(API):
            try:
                os.unlink(node_path(words[2]))
            except FileNotFoundError:
                pass
            remove_members(words[2])
        elif os.path.exists(NODES_FILE):
            kept = [n for n in read(NODES_FILE).split() if n != words[2]]
            with open(NODES_FILE, "w") as f:
                f.write(" ".join(kept) + "\n")
    return 0


def etcd_snapshot_save(args):
    """`k3s etcd-snapshot save --name N` (docs.k3s.io/cli/etcd-snapshot): a snapshot named
    <name>-<node>-<unix time> in the server's snapshot directory; the server must run."""
    log(f"etcd-snapshot save {' '.join(args)}")
    if not os.path.isdir("/var/lib/rancher/k3s/server/db"):
        print("etcd datastore is not running on this node", file=sys.stderr)
        return 1
    name = option(args, "--name") or "on-demand"
    directory = "/var/lib/rancher/k3s/server/db/snapshots"
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}-{socket.gethostname()}-{int(time.time())}")
    with open(path, "w") as f:
        f.write("stand-in etcd snapshot\n")
    print(f"Snapshot {os.path.basename(path)} saved.", file=sys.stderr)
    return 0


def main():
    argv = sys.argv[1:]
    if os.path.basename(sys.argv[0]) == "curl":
        return db_info(argv)
    if argv[:1] in (["server"], ["agent"]):
        return start(argv[0], argv[1:])
    if argv[:1] == ["kubectl"]:
        return kubectl(argv[1:])
    if argv[:2] == ["etcd-snapshot", "save"]:
        return etcd_snapshot_save(argv[2:])
    print(f"stand-in k3s: unsupported: {' '.join(argv)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
