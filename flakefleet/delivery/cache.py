"""Publish a pool's system to the stack's binary cache once; hosts then substitute from it.

    scripts/flakefleet cache          # plan in $FLAKEFLEET_PUBLISH, key in $FLAKEFLEET_SIGNING_KEY

The cache is an S3 bucket in the layout of a Nix binary cache (`nix-cache-info`, `<hash>.narinfo`,
`nar/…`), signed with the fleet's key. Nix writes that layout (`nix copy --to file://…?secret-key=`,
no NAR code of ours); boto3 uploads it, nar files first and each narinfo last, so a reader never
sees a narinfo whose nar is missing. Paths the bucket already holds, or that an upstream cache
(cache.nixos.org) holds, are not uploaded: hosts fetch those from there themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

from flakefleet.common.nix import NIX_FEATURES
from flakefleet.common.secrets import secret_file
from flakefleet.common.ssh import pinned_known_hosts
from flakefleet.delivery.build import BuildFailed, realise, ssh_env, ssh_to
from flakefleet.facts.flake import default_cache_dir
from flakefleet.pull.publish import publish_pointer
from flakefleet.common.cli import guard, required_env
from flakefleet.plan.contract import (
    IDENTITY_ENV,
    PUBLISH_ENV,
    SIGNING_KEY_ENV,
    Builder,
    PublishPlan,
    PublishReport,
)
CACHE_INFO = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
QUERY_THREADS = 32


def hash_part(path: str) -> str:
    """`/nix/store/<hash>-name` -> `<hash>`: a narinfo's key."""
    return Path(path).name.split("-", 1)[0]


def nar_url(narinfo: str) -> str:
    """The `URL:` field of a narinfo (`nar/<filehash>.nar.zst`)."""
    for line in narinfo.splitlines():
        if line.startswith("URL: "):
            return line[5:].strip()
    raise ValueError("narinfo without URL")


def held_by_bucket(client, bucket: str, paths: list[str]) -> set[str]:
    """The paths whose narinfo the bucket holds (HEAD per path, in parallel)."""
    import botocore.exceptions

    def held(path: str) -> bool:
        try:
            client.head_object(Bucket=bucket, Key=f"{hash_part(path)}.narinfo")
            return True
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    with ThreadPoolExecutor(QUERY_THREADS) as pool:
        return {p for p, ok in zip(paths, pool.map(held, paths)) if ok}


def http_holds(url: str, path: str, timeout: float) -> bool | None:
    """Whether the HTTP(S) cache at `url` holds `path` (HEAD its narinfo); None: no answer."""
    request = urllib.request.Request(f"{url.rstrip('/')}/{hash_part(path)}.narinfo", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError as err:
        return False if err.code == 404 else None
    except (urllib.error.URLError, OSError):
        return None


def held_upstream(upstreams: tuple[str, ...], paths: list[str], timeout: float = 5) -> tuple[set[str], list[str]]:
    """The paths an upstream cache holds (HEAD <upstream>/<hash>.narinfo), and notes on upstreams
    that could not be asked (their paths are then uploaded: never assume a path is held)."""
    held: set[str] = set()
    notes: list[str] = []
    for upstream in upstreams:
        todo = [p for p in paths if p not in held]
        if not todo:
            break
        with ThreadPoolExecutor(QUERY_THREADS) as pool:
            answers = list(pool.map(lambda path, u=upstream: http_holds(u, path, timeout), todo))
        held |= {p for p, ok in zip(todo, answers) if ok}
        if any(a is None for a in answers):
            notes.append(f"upstream {upstream} did not answer for some paths: they are uploaded")
    return held, notes


def closure_of(system: str) -> list[str]:
    res = subprocess.run(["nix-store", "--query", "--requisites", system], capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildFailed(f"cannot list the closure of {system}: {res.stderr.strip()}")
    return res.stdout.split()


def staging_dir(key: str) -> Path:
    """Where Nix writes the cache layout before upload, kept between runs so that a path is
    compressed and signed once (Nix skips what the directory holds); next to the systems cache,
    one per signing key (a rotated key must not upload narinfos signed by the old one)."""
    path = default_cache_dir().parent / "binary-cache" / hashlib.sha256(key.encode()).hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def export_signed(system: str, key: str, staging: Path, source: list[str] | None = None,
                  env: dict[str, str] | None = None) -> None:
    """Nix writes the binary-cache layout of the closure of `system` into `staging` (a binary
    cache takes a path only with its references), signing each narinfo with `key` (a file only
    this process can read, removed right after). `source`: `nix copy` options naming another
    store to read from (default: this one)."""
    with secret_file(key) as key_file:
        res = subprocess.run(
            ["nix", *NIX_FEATURES, "copy", *(source or []),
             "--to", f"file://{staging}?secret-key={key_file}&compression=zstd", system],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
    if res.returncode != 0:
        raise BuildFailed(f"writing the cache layout of {system} failed: {res.stderr.strip()[-2000:]}")


def upload(client, bucket: str, staging: Path, paths: list[str]) -> int:
    """Uploads each path's nar, then its narinfo; returns the bytes sent."""
    sent = 0
    try:
        client.head_object(Bucket=bucket, Key="nix-cache-info")
    except Exception:  # noqa: BLE001 - absent (or unreadable): write it, it is the same for every stack
        client.put_object(Bucket=bucket, Key="nix-cache-info", Body=CACHE_INFO.encode(), ContentType="text/plain")
    for path in paths:
        narinfo = (staging / f"{hash_part(path)}.narinfo").read_text()
        nar = staging / nar_url(narinfo)
        client.upload_file(str(nar), bucket, nar_url(narinfo))
        client.put_object(Bucket=bucket, Key=f"{hash_part(path)}.narinfo", Body=narinfo.encode(),
                          ContentType="text/x-nix-narinfo")
        sent += nar.stat().st_size + len(narinfo)
    return sent


def cache_has(url: str, path: str, timeout: float = 10) -> bool:
    """Whether the cache at `url` (s3://bucket?region=… or http(s)://…) holds `path`'s narinfo."""
    if url.startswith("s3://"):
        bucket, _, query = url[5:].partition("?")
        region = dict(q.split("=", 1) for q in query.split("&") if "=" in q).get("region", "")
        return bool(held_by_bucket(s3_client(region), bucket, [path]))
    return bool(http_holds(url, path, timeout))


def push_from(host: Builder, system: str, key: str, client, bucket: str, upstreams: tuple[str, ...] = ()) -> int:
    """What `host` built goes into the cache, relayed once by this deployer (`nix copy` from the
    host's store into the signed layout, then the upload of what neither the bucket nor an
    upstream holds); returns the bytes uploaded. --no-check-sigs: the host is pinned by key and
    built our derivation."""
    with pinned_known_hosts(host.address, host.port, host.host_key) as known:
        listed = subprocess.run([*ssh_to(host, known), f"nix-store --query --requisites {system}"],
                                capture_output=True, text=True)
        if listed.returncode != 0:
            raise BuildFailed(f"cannot list the closure of {system} on {host.name}: {listed.stderr.strip()}")
        closure = listed.stdout.split()
        in_cache = held_by_bucket(client, bucket, closure)
        upstream, _ = held_upstream(upstreams, [p for p in closure if p not in in_cache])
        todo = [p for p in closure if p not in in_cache and p not in upstream]
        if not todo:
            return 0
        staging = staging_dir(key)
        export_signed(system, key, staging, ["--no-check-sigs", "--from", host.store], ssh_env(host, known))
    return upload(client, bucket, staging, todo)


def publish(plan: PublishPlan, key: str, client) -> PublishReport:
    """Build (here or on the pool's builder), then upload what neither the bucket nor an upstream holds."""
    report = PublishReport(plan.pool, plan.system)
    realise(plan.drv, plan.system, plan.builder)
    if plan.bucket is None:
        return report
    closure = closure_of(plan.system)
    report.closure = len(closure)
    in_cache = held_by_bucket(client, plan.bucket, closure)
    upstream, report.notes = held_upstream(plan.upstreams, [p for p in closure if p not in in_cache])
    todo = [p for p in closure if p not in in_cache and p not in upstream]
    report.in_cache, report.upstream = len(in_cache), len(upstream)
    if todo:
        staging = staging_dir(key)
        export_signed(plan.system, key, staging)
        report.uploaded_bytes = upload(client, plan.bucket, staging, todo)
    report.uploaded = len(todo)
    if plan.pointer is not None:  # after the upload: a pointer never names what the cache lacks
        report.pointer = publish_pointer(client, plan, key)
    return report


def s3_client(region: str):
    """The deployer's S3 client (its AWS credentials, as Pulumi's); the region only when known."""
    import boto3

    return boto3.client("s3", region_name=region or None)


def main() -> int:
    import botocore.exceptions

    try:
        plan = PublishPlan.from_json(required_env(PUBLISH_ENV))
        key = os.environ.get(SIGNING_KEY_ENV)
        if not key:
            raise BuildFailed(f"{SIGNING_KEY_ENV} is not set: hosts accept only signed systems")
        if plan.builder and os.environ.get(IDENTITY_ENV):
            plan = replace(plan, builder=replace(plan.builder, identity_file=os.environ[IDENTITY_ENV]))
        report = publish(plan, key, s3_client(plan.region) if plan.bucket else None)
    except BuildFailed as err:
        print(f"publish: {err}", file=sys.stderr)
        return 1
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        print(f"publish: the cache bucket {plan.bucket} could not be used: {err}", file=sys.stderr)
        return 1
    print(f"[{plan.pool}] {report.uploaded} of {report.closure} paths uploaded ({report.uploaded_bytes} bytes); "
          f"{report.in_cache} already in the cache, {report.upstream} upstream", file=sys.stderr)
    print(json.dumps(asdict(report), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(guard("flakefleet cache", main))
