"""Rules several stack keys share: SSH keys down to their bytes, the kubelet's label rule,
unicast addresses and cron schedules. Pure functions: each returns why a value is refused, or None."""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from datetime import datetime
from ipaddress import IPv4Address

from cronsim import CronSim, CronSimError

from flakefleet.facts.aws import partitions

# ----------------------------------------------------------------------------- SSH keys

# Key type -> the fields of its public key blob after the type name (RFC 4253, 5656, 8709;
# OpenSSH PROTOCOL.u2f for the security-key types): "bytes:N" a string of N bytes, "str:V" the
# string V, "mpint" a multiple-precision integer, "str" any string.
_BLOBS = {
    "ssh-ed25519": ["bytes:32"],
    "ssh-rsa": ["mpint", "mpint"],
    "ecdsa-sha2-nistp256": ["str:nistp256", "bytes:65"],
    "ecdsa-sha2-nistp384": ["str:nistp384", "bytes:97"],
    "ecdsa-sha2-nistp521": ["str:nistp521", "bytes:133"],
    "sk-ssh-ed25519@openssh.com": ["bytes:32", "str"],
    "sk-ecdsa-sha2-nistp256@openssh.com": ["str:nistp256", "bytes:65", "str"],
}
AUTHORIZED_KEY_TYPES = tuple(_BLOBS)
# nixos/common/openssh.nix serves exactly one host key, ed25519: a pin of another type would
# stop matching the first time the host runs our system.
HOST_KEY_TYPES = ("ssh-ed25519",)
# A build host is not one of ours (its sshd serves whatever host keys it has): any host key
# type OpenSSH serves (security-key types are user keys only).
ANY_HOST_KEY_TYPES = tuple(k for k in _BLOBS if not k.startswith("sk-"))


def _read_string(blob: bytes, at: int) -> tuple[bytes | None, int]:
    if at + 4 > len(blob):
        return None, at
    n = int.from_bytes(blob[at : at + 4], "big")
    if at + 4 + n > len(blob):
        return None, at
    return blob[at + 4 : at + 4 + n], at + 4 + n


def _blob_problem(kind: str, blob: bytes) -> str | None:
    name, at = _read_string(blob, 0)
    if name is None or name.decode("ascii", "replace") != kind:
        return f"key data does not encode a {kind} key"
    for field in _BLOBS[kind]:
        value, at = _read_string(blob, at)
        if value is None:
            return f"key data is cut short (a {kind} key has more bytes): was it wrapped or truncated when copied?"
        shape, _, want = field.partition(":")
        if shape == "bytes" and len(value) != int(want):
            return f"key data is cut short (a {kind} key has more bytes): was it wrapped or truncated when copied?"
        if shape == "str" and want and value.decode("ascii", "replace") != want:
            return f"key data does not encode a {kind} key"
    if at != len(blob):
        return f"key data has {len(blob) - at} bytes too many for a {kind} key"
    if kind == "ssh-rsa":
        _, end_e = _read_string(blob, len(kind) + 4)
        modulus, _ = _read_string(blob, end_e)
        if len(modulus.lstrip(b"\0")) * 8 < 2048:
            return "an RSA key shorter than 2048 bits; OpenSSH refuses keys under 1024 and 2048 is the least to use"
    return None


def ssh_key_problem(line: str, allowed: tuple[str, ...] = AUTHORIZED_KEY_TYPES) -> str | None:
    """Why `line` is not an OpenSSH public key of an allowed type, down to its bytes, or None."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in _BLOBS:
        return f"must be an OpenSSH public key line '<type> <base64>' with type one of {', '.join(sorted(allowed))}"
    if parts[0] not in allowed:
        if allowed == HOST_KEY_TYPES:
            return (f"a {parts[0]} key, but the hosts serve only an {' or '.join(allowed)} host key "
                    "(nixos/common/openssh.nix): pin /etc/ssh/ssh_host_ed25519_key.pub")
        return f"a {parts[0]} key cannot be a host key; use one of {', '.join(allowed)}"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "key data is not valid base64 (was it wrapped or truncated when copied?)"
    return _blob_problem(parts[0], blob)


def host_key_problem(line: str, allowed: tuple[str, ...] = HOST_KEY_TYPES) -> str | None:
    """Why `line` cannot be pinned as a host's key (of a fleet host: ed25519; of another host,
    such as a builder: `ANY_HOST_KEY_TYPES`), or None."""
    return ssh_key_problem(line, allowed)


# ----------------------------------------------------------------------------- labels and taints

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# The kubelet's own rule for --node-labels (k8s.io/kubelet/pkg/apis IsKubeletLabel; the kubelet
# refuses to start with any other kubernetes.io or k8s.io label, and NodeRestriction enforces it).
KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
})
KUBELET_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _in(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def kubelet_may_set(key: str) -> bool:
    """Whether a kubelet may register its Node with label `key` (the kubelet's IsKubeletLabel rule)."""
    namespace = key.split("/", 1)[0] if "/" in key else ""
    if _in(namespace, "node-restriction.kubernetes.io"):
        return False  # NodeRestriction keeps these for the cluster's administrators
    if not (_in(namespace, "kubernetes.io") or _in(namespace, "k8s.io")):
        return True
    return key in KUBELET_LABELS or any(_in(namespace, allowed) for allowed in KUBELET_NAMESPACES)


def label_problem(key: str, value: str, kubelet_label: bool = True) -> str | None:
    """Why `key=value` is not a node label (or, with kubelet_label=False, taint) k3s may set, or None."""
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or (prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix))):
        return "is not a valid Kubernetes label key"
    if not _LABEL_VALUE.match(value):
        hint = " (an unquoted date? quote it in the stack file)" if re.match(r"^\d{4}-\d\d-\d\d", value) else ""
        return f"value {value!r} is not a valid Kubernetes label value{hint}"
    if kubelet_label and not kubelet_may_set(key):
        return ("kubelets may set only their own labels under kubernetes.io/ and k8s.io/ (e.g. "
                "topology.kubernetes.io/zone, node.kubernetes.io/*); use node.kubernetes.io/ or your own prefix")
    return None


# ----------------------------------------------------------------------------- AWS names

# Amazon S3's general purpose bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/
# bucketnamingrules.html): 3-63 characters of a-z, 0-9, '.', '-'; a letter or digit at both ends;
# no '..'; not an IPv4 address; reserved prefixes and suffixes.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_problem(name: str) -> str | None:
    """Why `name` is not an S3 bucket name (the name alone, not a URL or ARN), or None."""
    for scheme in ("s3://", "arn:aws:s3:::", "https://", "http://"):
        if name.startswith(scheme):
            bare = name[len(scheme):].split("/", 1)[0].split("?", 1)[0]
            return f"`{name}` is a URL or ARN; give the bucket's name alone (`{bare}`)"
    if not _BUCKET.match(name):
        return (f"`{name}` is not an S3 bucket name: 3-63 characters of lowercase letters, digits, '.' and '-', "
                "starting and ending with a letter or digit")
    if ".." in name:
        return f"`{name}` is not an S3 bucket name: two adjacent periods"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        return f"`{name}` is not an S3 bucket name: it is formatted as an IP address"
    if name.startswith(_BUCKET_PREFIXES) or name.endswith(_BUCKET_SUFFIXES):
        return f"`{name}` is not an S3 bucket name: S3 reserves its prefix or suffix"
    return None


def region_problem(region: str) -> str | None:
    """Why `region` is not an AWS region, or None: a region botocore lists, or one newer than this
    botocore that follows a partition's region pattern with a direction regions use (east, ...)."""
    known = [r for _, _, regions in partitions() for r in regions]
    directions = {r.rsplit("-", 2)[-2] for r in known}
    if region in known or (any(re.match(pattern, region) for _, pattern, _ in partitions())
                           and region.rsplit("-", 2)[-2] in directions):
        return None
    close = difflib.get_close_matches(region, known, n=1, cutoff=0.8)
    return f"`{region}` is not an AWS region" + (f" (did you mean {close[0]}?)" if close else "")


# ----------------------------------------------------------------------------- addresses and schedules


def host_address_problem(address: IPv4Address, loopback_fleet: bool) -> str | None:
    """Why a host cannot be reached at `address` (non-unicast; loopback outside a loopback test fleet)."""
    if address.is_unspecified:
        return f"{address} is the unspecified address, not a host"
    if address.is_multicast:
        return f"{address} is a multicast address, not a host"
    if address.is_reserved:  # 240.0.0.0/4, with the broadcast address 255.255.255.255
        return f"{address} is reserved (or broadcast), not a host"
    if address.is_loopback and not loopback_fleet:
        return f"{address} is a loopback address; only a stack whose hosts are all loopback test hosts may use one"
    return None


# What k3s' --etcd-snapshot-schedule-cron takes besides five fields (robfig/cron's standard parser).
_DESCRIPTORS = re.compile(r"^@(yearly|annually|monthly|weekly|daily|midnight|hourly|every \d+(ns|us|ms|s|m|h)+)$")


def cron_problem(schedule: str) -> str | None:
    """Why k3s would refuse a snapshot schedule (five cron fields, or a descriptor), or None."""
    if _DESCRIPTORS.match(schedule):
        return None
    if len(schedule.split()) != 5:
        return f"{schedule!r} is not a cron schedule: five fields (minute hour day-of-month month day-of-week)"
    try:
        CronSim(schedule, datetime(2026, 1, 1))
    except CronSimError as err:
        return f"{schedule!r} is not a valid cron schedule: {err}"
    return None
