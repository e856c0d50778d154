"""The main job, on this machine: the local stack's fleet brought up on test hosts.

    python scripts/demo.py up      # start the local fleet and bring it up (make demo)
    python scripts/demo.py down    # stop its hosts and remove their state (make demo-down)

The local stack (stacks/Pulumi.local.yaml) names three bring-your-own hosts on 127.0.0.11-13.
`up` starts them as test hosts (tests/testhosts.py: an sshd per address in its own mount
namespace with its own /nix), with host keys that match what the stack pins, and delivers the
offline stand-in systems (tests/standin) to them: with the Pulumi CLI and its command, random and tls
plugins on PATH through `pulumi up --stack local` (file backend and passphrase under .demo/, no
login, no network); without them through the same per-host plans, in the same waves, with the
same runner, as a rollout without Pulumi state. Where scripts/kubernetes.sh built the Kubernetes
binaries, the cluster's API is a real one (tests/kube/controlplane.py) at cp-0's address :6443,
started once the delivery wrote the stack's CAs on cp-0 and kept until `down`; each host's
stand-in k3s is its kubelet toward it (tests/standin/k3s.py, KUBE_LOCAL). Then it shows each
host's generation and system, `kubectl get nodes` with the stack's kubeconfig output, and what
to try next; `.demo/env.sh` holds the environment those commands need (docs/operations.md).
Needs root (mount namespaces).

TEST-ONLY KEYS: the demo hosts' SSH host keys and the demo deploy key are derived from the public
seeds below, so anyone can compute their private halves. They exist only for loopback test hosts
and must never be authorized anywhere else (the config refuses the demo deploy key outside
loopback hosts).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.demo_keys import DEPLOY_KEY_COMMENT, DEPLOY_KEY_NAME, write_demo_keypair  # noqa: E402

# The demo's own state; FLAKEFLEET_DEMO_DIR moves it (the tests run the demo in a directory of theirs).
DEMO = Path(os.environ.get("FLAKEFLEET_DEMO_DIR") or ROOT / ".demo").resolve()
# Where the local stack's file is read; FLAKEFLEET_DEMO_STACKS moves it (the tests change a copy).
STACKS = Path(os.environ.get("FLAKEFLEET_DEMO_STACKS") or ROOT / "stacks").resolve()


def shown(path: Path) -> str:
    """A path as the commands the demo prints name it: relative to the project when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


STACK = "local"


# ----------------------------------------------------------------------------- the local fleet


def local_stack():
    """The local stack's config and inventory (the committed stack file, unchanged)."""
    from flakefleet.config import parse_stack_config
    from flakefleet.plan.inventory import plan_inventory
    from flakefleet.config.stackfile import read_stack_file

    raw = read_stack_file(STACK, STACKS)
    cfg = parse_stack_config(raw, stacks_dir=STACKS)
    return raw, cfg, plan_inventory(cfg)


def pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def start_hosts(fleet, inv) -> dict:
    """Start each host of the stack (or find it running from an earlier `make demo`)."""
    from tests.testhosts import TestHost, keypair, port_open, start_host

    hosts = {}
    for host in inv.hosts:
        root = fleet.root / host.name
        if pid_alive(root / "sshd.pid") and port_open(str(host.address), host.ssh_port):
            hosts[host.name] = TestHost(host.name, str(host.address), host.ssh_port, root,
                                        keypair(root.parent / f"{host.name}_host_key", host.name))
            continue
        key = fleet.root / f"{host.name}_host_key"
        write_demo_keypair(key, host.name, host.name)
        hosts[host.name] = start_host(fleet, host.name, str(host.address), host.ssh_port, host_key_file=key)
        if hosts[host.name].host_key.split()[:2] != host.ssh_host_key.split()[:2]:
            raise SystemExit(f"demo: {host.name}'s key does not match the stack's pin; run `make demo-down`")
    return hosts


def demo_fleet():
    """The demo's deployer: the test-only deploy key the stack authorizes, a Nix signing key of
    this machine's own (generated once, git-ignored), under .demo/."""
    from tests.testhosts import make_fleet

    DEMO.mkdir(mode=0o700, exist_ok=True)
    DEMO.chmod(0o700)  # keys, tokens, the kubeconfig and Pulumi's state live here
    write_demo_keypair(DEMO / "deploy_ed25519", DEPLOY_KEY_NAME, DEPLOY_KEY_COMMENT)
    return make_fleet(DEMO)


def demo_tokens(cluster: str) -> dict[str, str]:
    """k3s tokens and the cluster's CAs for the no-Pulumi rollout (Pulumi makes its own with
    pulumi-random and pulumi-tls; tests/kube/pki.py makes them as those do), kept 0600."""
    from flakefleet.plan.specs import AGENT_TOKEN, SERVER_TOKEN
    from tests.kube.pki import as_environment, stack_cas

    path = DEMO / "tokens.json"
    if not path.exists():
        private_file(path, json.dumps({SERVER_TOKEN[1]: secrets.token_hex(24), AGENT_TOKEN[1]: secrets.token_hex(24),
                                       **as_environment(stack_cas(cluster))}))
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- the real API


KUBE = DEMO / "kube"  # the control plane's state: etcd's data, certificates, logs, its processes
KUBE_PIDS = KUBE / "pids.json"
HOST_HANDLE = "/etc/flakefleet/standin-kube"  # tests/standin/k3s.py: KUBE_LOCAL


def api_processes() -> dict[str, int]:
    """The demo's control plane processes still running (name -> pid), checked by executable."""
    try:
        recorded = json.loads(KUBE_PIDS.read_text())
    except (OSError, ValueError):
        return {}
    alive = {}
    for name, pid in recorded.items():
        try:
            if Path(os.readlink(f"/proc/{pid}/exe")).name == name:
                alive[name] = pid
        except OSError:
            pass
    return alive


def stop_api() -> list[str]:
    """Kill the demo's control plane (nothing of it is kept: `make demo-down` removes its state)."""
    alive = api_processes()
    for pid in alive.values():
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    deadline = time.monotonic() + 30  # SIGKILL is not refused; a loaded machine may take a moment
    while any(running(pid) for pid in alive.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(alive)


def running(pid: int) -> bool:
    """The process exists and is not a zombie (its parent, an earlier `make demo`, is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def api_up(bin_dir: Path) -> bool:
    res = subprocess.run([str(bin_dir / "kubectl"), "--kubeconfig", str(KUBE / "users/system-admin.kubeconfig"),
                          "get", "--raw", "/readyz"], capture_output=True, text=True, timeout=30)
    return res.returncode == 0 and res.stdout.strip() == "ok"


def start_api(bin_dir: Path, cfg, inv, hosts) -> None:
    """etcd, kube-apiserver and kube-controller-manager at the first control plane's address:6443
    (the stack's API endpoint), as k3s runs them there (tests/kube/controlplane.py), serving from
    the CAs the delivery gave that host; then each host's handle, so its stand-in k3s is a kubelet
    of this API and its `k3s kubectl` the real kubectl. Outlives `make demo`; `make demo-down` stops it."""
    from flakefleet.plan.specs import K3S_CAS, K3S_TLS_DIR
    from tests.kube.controlplane import ControlPlane
    from tests.kube.pki import Pair

    first = hosts[inv.control_planes[0].name]
    tls = first.path(K3S_TLS_DIR)
    cas = {name: Pair((tls / f"{name}.crt").read_text(), (tls / f"{name}.key").read_text()) for name in K3S_CAS}
    stop_api()
    shutil.rmtree(KUBE, ignore_errors=True)
    plane = ControlPlane(KUBE, bin_dir, cas, service_cidr=str(cfg.cluster.service_cidr),
                         cluster_cidr=str(cfg.cluster.pod_cidr), address=first.address, api_port=6443,
                         wait_for_controllers=False)
    try:
        plane.start()
    finally:
        private_file(KUBE_PIDS, json.dumps({name: proc.pid for name, proc in plane.procs.items()}))
    # kubectl where every host sees it (their /root, where the build cache usually is, is their own).
    (KUBE / "bin").mkdir(exist_ok=True)
    shutil.copy2(bin_dir / "kubectl", KUBE / "bin" / "kubectl")
    for host in hosts.values():
        handle = host.path(HOST_HANDLE)
        (handle / "kubectl").write_text(f"{KUBE / 'bin' / 'kubectl'}\n")
        plane.share(handle)  # `server` last: the hosts' k3s waits for it


def wait_for_api(bin_dir: Path, cfg, inv, hosts, stop: threading.Event, failed: list[str]) -> None:
    """Start the API once the delivery wrote the stack's CAs on the first control plane (its
    health gate waits for this API, as k3s' would for its own)."""
    from flakefleet.plan.specs import K3S_CAS, K3S_TLS_DIR

    tls = hosts[inv.control_planes[0].name].path(K3S_TLS_DIR)
    while not all((tls / f"{name}.{kind}").exists() for name in K3S_CAS for kind in ("crt", "key")):
        if stop.wait(0.2):
            return
    try:
        start_api(bin_dir, cfg, inv, hosts)
    except (OSError, RuntimeError, TimeoutError) as err:
        failed.append(str(err).splitlines()[0])


def real_api(cfg, inv, hosts) -> tuple[threading.Thread | None, threading.Event, list[str]]:
    """The real API for the demo hosts, where the binaries exist: already running (an earlier
    `make demo`), started now (the CAs exist), or started by a thread once the delivery wrote them."""
    from tests.kube.controlplane import binaries

    stop, failed = threading.Event(), []
    bin_dir = binaries()  # built by scripts/kubernetes.sh (`make test` does; `make kubernetes` alone)
    if bin_dir is None:
        print("demo: no Kubernetes binaries (`make kubernetes` builds them): the nodes are the stand-in k3s' own")
        return None, stop, failed
    for host in hosts.values():  # the hosts' k3s waits for the API (tests/standin/k3s.py)
        host.path(HOST_HANDLE).mkdir(parents=True, exist_ok=True)
    if {"etcd", "kube-apiserver", "kube-controller-manager"} <= set(api_processes()) and api_up(bin_dir):
        return None, stop, failed
    thread = threading.Thread(target=wait_for_api, args=(bin_dir, cfg, inv, hosts, stop, failed), daemon=True)
    thread.start()
    return thread, stop, failed


def fetch_kubeconfig(cfg, inv, env: dict[str, str]) -> str:
    """What the stack's Kubeconfig component exports (components/kubeconfig.py): k3s.yaml read
    from the first control plane over pinned SSH, its server the API endpoint."""
    from flakefleet.cluster.kubeconfig import fetch, rewrite_server
    from flakefleet.plan.contract import Endpoint, KubeconfigPlan

    first = inv.control_planes[0]
    plan = KubeconfigPlan(cluster=cfg.cluster.name, api_endpoint=inv.api_endpoint,
                          endpoint=Endpoint.of(first, first.ssh_host_key))
    return rewrite_server(fetch(plan, env["FLAKEFLEET_SSH_IDENTITY"]), plan.api_endpoint, plan.cluster)


# ----------------------------------------------------------------------------- bringing it up


def stream(command: list[str] | str, env: dict[str, str], prefix: str = "") -> subprocess.CompletedProcess:
    """Run, printing every line as it comes (prefixed), and return what it printed."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, shell=isinstance(command, str), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[str] = []
    err: list[str] = []

    def pump(pipe, sink):
        for line in pipe:
            sink.append(line)
            if not line.startswith("{"):  # the runner's JSON report is for Pulumi, not for people
                print(f"{prefix}{line}", end="", flush=True)

    threads = [threading.Thread(target=pump, args=(proc.stdout, out)), threading.Thread(target=pump, args=(proc.stderr, err))]
    for t in threads:
        t.start()
    proc.wait()
    for t in threads:
        t.join()
    return subprocess.CompletedProcess(command, proc.returncode, "".join(out), "".join(err))


def pulumi_tools() -> list[str]:
    """What is missing for the real engine: the CLI, the Python language host, the plugins."""
    needed = ["pulumi", "pulumi-language-python", "pulumi-resource-command", "pulumi-resource-random",
              "pulumi-resource-tls"]  # tls: the cluster's CAs
    return [t for t in needed if shutil.which(t) is None]


def deployer_env(fleet) -> dict[str, str]:
    from tests.conftest import OFFLINE_NIX_CONFIG, STANDIN_FLAKE

    return {
        **os.environ,
        "FLAKEFLEET_FLAKE": STANDIN_FLAKE,
        "FLAKEFLEET_SSH_IDENTITY": str(fleet.client_key),
        "NIX_CONFIG": "\n".join(filter(None, [os.environ.get("NIX_CONFIG"), OFFLINE_NIX_CONFIG])),
        "FLAKEFLEET_CACHE_DIR": str(DEMO / "systems-cache"),
    }


PULUMI_CONFIG = DEMO / "Pulumi.local.yaml"  # the stack file plus the demo's signing key (a secret)
ENV_FILE = DEMO / "env.sh"  # what `source` gives a shell to run pulumi and flakefleet on the demo's state
KUBECONFIG = DEMO / "kubeconfig"  # the stack's kubeconfig output, as `kubectl` after `source` reads it


def private_file(path: Path, text: str) -> Path:
    """Write `text` to `path` readable by its owner only (0600 from the first byte)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)
    return path


def pulumi_env(env: dict[str, str]) -> dict[str, str]:
    """The Pulumi CLI on the demo's own state: a file backend and a passphrase of this machine's
    own (generated once, 0600), under .demo/: no login, no network."""
    passphrase = DEMO / "passphrase"
    if not passphrase.exists():
        private_file(passphrase, secrets.token_urlsafe(24) + "\n")
    (DEMO / "pulumi-state").mkdir(mode=0o700, exist_ok=True)
    return {**env, "PULUMI_BACKEND_URL": f"file://{DEMO / 'pulumi-state'}",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase), "PULUMI_SKIP_UPDATE_CHECK": "1",
            "PULUMI_HOME": str(DEMO / "pulumi-home")}


def pulumi(args: list[str], env: dict[str, str], cwd: Path = ROOT, stdin: str | None = None, check: bool = True):
    proc = subprocess.run(["pulumi", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: pulumi {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def new_stack_salt(env: dict[str, str]) -> str:
    """Create the demo's stack and return its passphrase salt. `pulumi stack init` writes the salt
    into the stack's config file, so it runs in a scratch copy of the project: the committed
    stacks/Pulumi.local.yaml holds no secret and stays free of a salt (a salt would lock it to
    this machine's passphrase)."""
    with tempfile.TemporaryDirectory(prefix="flakefleet-demo-") as tmp:
        shutil.copy(ROOT / "Pulumi.yaml", tmp)
        pulumi(["stack", "init", STACK, "--secrets-provider", "passphrase"], env, cwd=Path(tmp))
        return yaml.safe_load((Path(tmp) / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["encryptionsalt"]


def demo_config(fleet, env: dict[str, str]) -> Path:
    """.demo/Pulumi.local.yaml: the committed stack file as it is now (a pool changed there is
    delivered), with the demo stack's salt and its signing key, encrypted once and kept."""
    committed = yaml.safe_load((STACKS / f"Pulumi.{STACK}.yaml").read_text())
    previous = yaml.safe_load(PULUMI_CONFIG.read_text()) if PULUMI_CONFIG.exists() else None
    exists = pulumi(["stack", "select", STACK], env, check=False).returncode == 0
    if exists and previous is None:
        raise SystemExit(f"demo: the demo's stack exists but {PULUMI_CONFIG} is gone; run `make demo-down` and start again")
    if not exists:
        previous = {"encryptionsalt": new_stack_salt(env), "config": {}}
    key = (previous.get("config") or {}).get("flakefleet:signing_key")
    document = {**committed, "encryptionsalt": previous["encryptionsalt"],
                "config": {**committed["config"], **({"flakefleet:signing_key": key} if key else {})}}
    private_file(PULUMI_CONFIG, yaml.safe_dump(document, sort_keys=False))
    pulumi(["stack", "select", STACK], env)
    if key is None:  # the value goes on stdin, never on a command line
        pulumi(["config", "set", "--secret", "flakefleet:signing_key", "--stack", STACK, "--config-file",
                str(PULUMI_CONFIG)], env, stdin=fleet.signing_secret)
        PULUMI_CONFIG.chmod(0o600)
    return PULUMI_CONFIG


def write_env_file(env: dict[str, str]) -> Path:
    """.demo/env.sh (0600): every variable the demo ran pulumi and flakefleet with."""
    names = ["PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_HOME", "PULUMI_SKIP_UPDATE_CHECK",
             "FLAKEFLEET_FLAKE", "FLAKEFLEET_CACHE_DIR", "FLAKEFLEET_SSH_IDENTITY", "NIX_CONFIG"]
    lines = [f"# make demo's environment: `source {shown(ENV_FILE)}`, then pulumi, flakefleet and kubectl work on the demo's state.",
             *(f"export {n}={shlex.quote(env[n])}" for n in names if n in env),
             # kubectl on the exported kubeconfig (the real API on the first control plane).
             f"export KUBECONFIG={shlex.quote(str(KUBECONFIG))}",
             # The flakefleet command (make setup installs it into .venv/bin) and the demo's kubectl first on PATH.
             f'export PATH={shlex.quote(str(ROOT / ".venv" / "bin"))}:{shlex.quote(str(KUBE / "bin"))}:"$PATH"']
    return private_file(ENV_FILE, "\n".join(lines) + "\n")


def with_pulumi(fleet, env: dict[str, str]) -> dict:
    """`pulumi up --stack local` on a file backend under .demo/; returns the stack outputs."""
    env = pulumi_env(env)
    config = demo_config(fleet, env)
    write_env_file(env)
    if stream(["pulumi", "up", "--yes", "--skip-preview", "--stack", STACK, "--config-file", str(config)], env).returncode:
        raise SystemExit("demo: pulumi up failed (its output is above)")
    out = pulumi(["stack", "output", "--json", "--show-secrets", "--stack", STACK], env)
    return json.loads(out.stdout)


def without_pulumi(fleet, env: dict[str, str], hosts) -> dict:
    """The same per-host plans, waves and runner as the Delivery component, with the Command
    lifecycle of tests/lifecycle.py (state kept in .demo/commands.json), no Pulumi state."""
    from flakefleet.config import parse_stack_config
    from flakefleet.plan.inventory import plan_inventory
    from components.tokens import ca_hash
    from flakefleet.plan.specs import K3S_CAS, host_system, system_specs
    from flakefleet.plan.hostplans import delivery_plans
    from flakefleet.plan.rollout import waves
    from flakefleet.nixos.evaluate import evaluate_systems
    from flakefleet.facts.flake import resolve_flake
    from tests.lifecycle import LocalCommand
    from tests.local_fleet import command_inputs

    raw, _, _ = local_stack()
    cfg = parse_stack_config({**raw, "flakefleet:signing_key": fleet.signing_secret}, None, {"flakefleet:signing_key"},
                             STACKS)
    inv = plan_inventory(cfg)
    os.environ.update({k: env[k] for k in ("FLAKEFLEET_FLAKE", "NIX_CONFIG", "FLAKEFLEET_CACHE_DIR")})
    systems, _ = evaluate_systems(resolve_flake(None), system_specs(cfg, inv))
    tokens = demo_tokens(cfg.cluster.name)
    # The stack's CAs, as the Tokens component gives them: on the first control plane, and their hash in the tokens.
    plans = delivery_plans(cfg, inv, systems, {h.name: h.ssh_host_key for h in inv.hosts},
                           ca_hash=ca_hash(tokens[K3S_CAS["server-ca"][0]]))
    state_file = DEMO / "commands.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}

    def run(command: str, extra: dict[str, str]):
        return stream(command, {**env, "FLAKEFLEET_SIGNING_KEY": fleet.signing_secret, **extra})

    commands = {h.name: LocalCommand(run, **state.get(h.name, {})) for h in inv.hosts}
    for number, wave in enumerate(waves(cfg, inv)):
        print(f"--- wave {number}: {', '.join(h.name for h in wave)}")
        results = {}
        workers = [threading.Thread(target=lambda h=h: results.update(
            {h.name: commands[h.name].up(command_inputs(plans[h.name], secrets=tokens))})) for h in wave]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for h in wave:
            if not results[h.name]:
                print(f"[{h.name}] unchanged: no command")
        state.update({n: {"inputs": c.inputs, "stdout": c.stdout} for n, c in commands.items() if c.inputs})
        state_file.write_text(json.dumps(state))
        state_file.chmod(0o600)
        if any(s.proc.returncode != 0 for h in wave for s in results[h.name]):
            raise SystemExit(f"demo: wave {number} failed; the rollout stopped (messages above)")
    leave(state, run)
    state_file.write_text(json.dumps(state))
    wanted = {h.name: systems[host_system(cfg, h)].out for h in inv.hosts}
    nodes = {h.name: {"role": h.role, "pool": h.pool, "address": str(h.address), "ssh_port": h.ssh_port,
                      "ssh_user": h.ssh_user, "host_key": h.ssh_host_key, "wanted": wanted[h.name],
                      "system": json.loads(commands[h.name].stdout.strip().splitlines()[-1]).get("system"),
                      "last_outcome": json.loads(commands[h.name].stdout.strip().splitlines()[-1]).get("outcome")}
             for h in inv.hosts}
    kubeconfig = {"kubeconfig": fetch_kubeconfig(cfg, inv, env)} if api_processes() else {}
    return {"nodes": nodes, "api_endpoint": inv.api_endpoint, **kubeconfig}


def leave(state: dict, run) -> None:
    """Hosts gone from the stack file since the last `make demo`, removed last, as Pulumi runs a
    removed Command's delete at the end of an update: drained, k3s stopped, Node deleted (their
    test hosts keep running until `make demo-down`)."""
    from tests.lifecycle import LocalCommand

    for name in sorted(set(state) - {h.name for h in local_stack()[2].hosts}):
        print(f"--- leaving the stack: {name}")
        step = LocalCommand(run, **state[name]).destroy()
        if step.proc.returncode != 0:
            raise SystemExit(f"demo: {name}'s removal failed (messages above); it stays in the demo's state")
        del state[name]


def show(env: dict[str, str], outputs: dict, hosts, took: float, engine: bool) -> None:
    """Each host's generation and system, the cluster's nodes, and what to try next."""
    outputs_file = private_file(DEMO / "outputs.json", json.dumps(outputs, indent=2))  # it holds the kubeconfig
    print("\n=== the fleet")
    for name, host in hosts.items():
        gens = host.generations()
        print(f"{name:9} generation {gens[-1].split('-')[1] if gens else '-':>3}  {host.current_system() or '-'}")
    print(f"\n=== drift (flakefleet drift --outputs {shown(outputs_file)})")
    stream([sys.executable, "-m", "flakefleet", "drift", "--outputs", str(outputs_file)], env)
    real = bool(outputs.get("kubeconfig")) and bool(api_processes())
    if real:
        private_file(KUBECONFIG, outputs["kubeconfig"])
        print(f"\n=== kubectl get nodes (the stack's kubeconfig output, in {shown(KUBECONFIG)}; the real API on "
              f"{next(iter(outputs['nodes']))})")
        stream([str(KUBE / "bin" / "kubectl"), "--kubeconfig", str(KUBECONFIG), "get", "nodes"], env)
    print("\n=== nodes, as the first control plane's k3s reports them (asked over pinned SSH, as the readiness gate "
          + ("does)" if real else "does; without the Kubernetes binaries the stand-in k3s has no API server)"))
    cp = outputs["nodes"]["cp-0"]
    from flakefleet.common.ssh import pinned_ssh
    from flakefleet.cluster.kubectl import ready_nodes

    with pinned_ssh(cp["address"], cp["ssh_port"], cp["ssh_user"], cp["host_key"], env["FLAKEFLEET_SSH_IDENTITY"]) as ssh:
        res = subprocess.run([*ssh, "/run/current-system/sw/bin/k3s", "kubectl", "get", "nodes", *outputs["nodes"],
                              "-o", "json"], capture_output=True, text=True, timeout=60)
    ready = ready_nodes(res.stdout) if res.returncode == 0 else set()
    for name in outputs["nodes"]:
        print(f"{name:9} {'Ready' if name in ready else 'NotReady'}")
    print(f"\nAPI endpoint {outputs.get('api_endpoint')}; outputs in {shown(outputs_file)}. Up in {took:.0f} s.")
    print(next_steps(engine, real))


def next_steps(engine: bool, real: bool) -> str:
    """What to try next, as commands that work verbatim from the project directory."""
    env, config, outputs, demo = shown(ENV_FILE), shown(PULUMI_CONFIG), shown(DEMO / "outputs.json"), shown(DEMO)
    kubectl = f"  - kubectl get nodes   # the kubeconfig output ({shown(KUBECONFIG)}), the real API\n" if real else ""
    first = f"""
The real engine on the demo's state (file backend, passphrase and signing key under {demo}/;
the committed stacks/Pulumi.local.yaml holds no secret, the demo's copy does):
  source {env}
  pulumi preview --stack local --config-file {config} --diff
  pulumi up --stack local --config-file {config}
  pulumi refresh --stack local --config-file {config}
  pulumi stack output --stack local""" if engine else """
With the Pulumi CLI and its plugins on PATH (docs/operations.md says how to get them), `make demo`
runs `pulumi up` instead and prints how to run pulumi on its state."""
    return first + f"""

Next (after `source {env}`):
  - change a pool (e.g. labels of `workers` in stacks/Pulumi.local.yaml) and run `make demo` again:
    only that pool's hosts switch, batch by batch; run it unchanged and no host is touched
  - delete worker-1 from stacks/Pulumi.local.yaml and run `make demo` again: it is drained and its
    Node deleted, last; nothing runs on the other hosts (put it back and it joins again)
  - flakefleet status --outputs {outputs}   # Ready, k3s, etcd voter, system, last delivery
{kubectl}  - flakefleet drift --outputs {outputs}
  - after such a change, put a host back on its previous system, through the same confirm and dead-man path:
    flakefleet rollback --stack local --host worker-0
  - make demo-down    # stop the hosts (every process of theirs), remove {demo}/"""


def up() -> int:
    from tests.testhosts import prerequisites

    missing = prerequisites()
    if missing:
        print(f"demo: the local fleet needs {', '.join(missing)} (test hosts are sshds in their own mount namespaces); "
              "run `make demo` as root on a machine with Nix and OpenSSH", file=sys.stderr)
        return 1
    start = time.monotonic()
    _, cfg, inv = local_stack()
    fleet = demo_fleet()
    try:
        hosts = start_hosts(fleet, inv)
    except RuntimeError as err:  # an address in use, an sshd that would not start
        print(f"demo: {err}", file=sys.stderr)
        return 1
    print(f"demo: hosts up: {', '.join(f'{h.name} {h.address}:{h.port}' for h in hosts.values())}")
    env = deployer_env(fleet)
    write_env_file(env)
    thread, stop, failed = real_api(cfg, inv, hosts)
    missing = pulumi_tools()
    try:
        if not missing:
            outputs = with_pulumi(fleet, env)
        else:
            print(f"demo: no Pulumi engine here ({', '.join(missing)} not on PATH; docs/operations.md says how to "
                  "get them). Delivering the same per-host plans in the same waves with the same runner: a rollout "
                  "WITHOUT Pulumi state.")
            outputs = without_pulumi(fleet, env, hosts)
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        if failed:
            print(f"demo: the Kubernetes API did not start (logs in {shown(KUBE)}/): {failed[0]}", file=sys.stderr)
    show(env, outputs, hosts, time.monotonic() - start, engine=not missing)
    return 0


def down() -> int:
    """Every process of every demo host (its sshd, sessions, a dead-man switch still waiting),
    found by the host's mount namespace; then .demo/ is removed."""
    from tests.testhosts import NAMESPACE_FILE, kill_namespace

    stopped = ["the Kubernetes API"] if stop_api() else []
    for root in sorted(p for p in DEMO.glob("*") if p.is_dir()):
        marker, pidfile = root / NAMESPACE_FILE, root / "sshd.pid"
        if marker.exists():
            namespace = marker.read_text().strip()
        elif pid_alive(pidfile):  # a host started before namespaces were recorded
            namespace = os.readlink(f"/proc/{pidfile.read_text().strip()}/ns/mnt")
        else:
            continue
        if kill_namespace(namespace):
            stopped.append(root.name)
    shutil.rmtree(DEMO, ignore_errors=True)
    print(f"demo: stopped {', '.join(stopped) or 'no hosts'}; removed {shown(DEMO)}/")
    return 0


if __name__ == "__main__":
    sys.exit({"up": up, "down": down}.get(sys.argv[1] if len(sys.argv) > 1 else "up", lambda: 2)())
