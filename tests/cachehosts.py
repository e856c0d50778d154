"""A binary cache for the host tests: an S3 bucket under moto (what `flakefleet cache` uploads
to) served over HTTP on a loopback address, as an HTTP front of the bucket serves it to hosts."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.exceptions
from moto import mock_aws

REGION = "eu-west-1"


class BucketServer(ThreadingHTTPServer):
    """GET/HEAD /<key> answered from one bucket; counts the bytes it served."""

    daemon_threads = True

    def __init__(self, address: str, client, bucket: str):
        super().__init__((address, 0), BucketHandler)
        self.client, self.bucket, self.bytes_served = client, bucket, 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class BucketHandler(BaseHTTPRequestHandler):
    server: BucketServer

    def _object(self) -> bytes | None:
        try:
            return self.server.client.get_object(Bucket=self.server.bucket, Key=self.path.lstrip("/"))["Body"].read()
        except botocore.exceptions.ClientError:
            return None

    def _answer(self, body: bool) -> None:
        data = self._object()
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
            self.server.bytes_served += len(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def do_HEAD(self):  # noqa: N802
        self._answer(body=False)

    def log_message(self, *args):  # quiet
        pass


@contextmanager
def s3_bucket(name: str = "fleet-cache"):
    """A moto S3 bucket and a client for it (no AWS account, nothing leaves this process)."""
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


@contextmanager
def served(client, bucket: str, address: str):
    """The bucket served over HTTP on `address` (a loopback address the test hosts can reach)."""
    server = BucketServer(address, client, bucket)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
