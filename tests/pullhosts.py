"""What an autoscaled pool's instance talks to at first boot, on loopback for the host tests:

- the instance metadata service, IMDSv2 only, one per test machine (its own address): a stand-in
  restating docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html
  ("Use IMDSv2"): a session token from `PUT /latest/api/token` with
  `X-aws-ec2-metadata-token-ttl-seconds` (1-21600), every `GET` carrying it in
  `X-aws-ec2-metadata-token`, 401 without it (`HttpTokens: required`, as the launch template sets);
  `iam/security-credentials/` names the role, `iam/security-credentials/<role>` its credentials
  (Code, Type AWS-HMAC, AccessKeyId, SecretAccessKey, Token, Expiration), as botocore's
  InstanceMetadataFetcher reads them;
- S3, SSM, EC2 and Auto Scaling: moto's server, with CompleteLifecycleAction (which moto lacks)
  recorded as the Auto Scaling API takes it (AutoScalingGroupName, LifecycleHookName,
  LifecycleActionResult CONTINUE|ABANDON, InstanceId);
- the binary cache: a `file://` store (what `nix copy --to` writes, narinfos signed) served over
  HTTP, as S3 serves the stack's bucket to Nix.
"""

from __future__ import annotations

import datetime
import functools
import http.server
import json
import secrets
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
ROLE = "ff-test-pulled-spot"
COMPLETED: list[dict] = []  # CompleteLifecycleAction calls, in order


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def imds_handler(instance: str, address: str, zone: str, answers: dict[str, str] | None = None):
    """`answers`: more metadata paths, read at each request (a test changes them while it runs),
    e.g. `autoscaling/target-lifecycle-state` ("InService", "Terminated": AWS' "Retrieve the target
    lifecycle state through instance metadata")."""
    tokens: set[str] = set()
    more = answers if answers is not None else {}

    class Imds(_Quiet):
        def do_PUT(self):
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if self.path != "/latest/api/token" or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._send(400, "")
            token = secrets.token_urlsafe(32)
            tokens.add(token)
            self._send(200, token)

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") not in tokens:
                return self._send(401, "")
            now = datetime.datetime.now(datetime.timezone.utc)
            creds = {"Code": "Success", "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "Type": "AWS-HMAC",
                     "AccessKeyId": "ASIATESTPULLED", "SecretAccessKey": "pulled-secret", "Token": "pulled-session",
                     "Expiration": (now + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")}
            answers = {"instance-id": instance, "local-ipv4": address, "placement/availability-zone": zone,
                       "iam/security-credentials/": ROLE, f"iam/security-credentials/{ROLE}": json.dumps(creds),
                       **more}
            path = self.path.removeprefix("/latest/meta-data/")
            self._send(200, answers[path]) if path in answers else self._send(404, "")

        def _send(self, code: int, body: str):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Imds


@contextmanager
def serve(address: str, handler):
    server = http.server.ThreadingHTTPServer((address, free_port(address)), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def imds(instance: str, address: str, zone: str = f"{REGION}a", answers: dict[str, str] | None = None):
    """The metadata service of one instance, on its own address: its base URL."""
    return serve(address, imds_handler(instance, address, zone, answers))


def cache_server(directory: Path, address: str):
    """A binary cache directory over HTTP: its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    quiet = type("Cache", (handler.func, _Quiet), {})
    return serve(address, functools.partial(quiet, directory=str(directory)))


def _complete_lifecycle_action(self):
    COMPLETED.append({k: self._get_param(k) for k in ("AutoScalingGroupName", "LifecycleHookName",
                                                       "LifecycleActionResult", "InstanceId")})
    return EmptyResult()


@contextmanager
def aws(address: str = "127.0.0.1"):
    """moto's server (S3, SSM, Auto Scaling) with lifecycle completions recorded: its endpoint."""
    AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action
    port = free_port(address)
    server = ThreadedMotoServer(ip_address=address, port=port)
    server.start()
    try:
        yield f"http://{address}:{port}"
    finally:
        server.stop()
