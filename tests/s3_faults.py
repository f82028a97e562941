"""A loopback HTTP proxy in front of moto's server that plays what moto does not, as
AWS documents it: S3's answers to a request signed for another region than the
bucket's, STS refusing an AssumeRole, and small ListAccounts pages; and that injects
the faults real S3 and its networks show: 500 InternalError, 503 SlowDown, connections reset before the
request is forwarded, connections reset after the write reached S3 (only the response
is lost), delays, and GET bodies cut short.

Any method, header and body byte is passed through unchanged (aws-chunked uploads
included: the body is opaque bytes here), so what moto sees is what the SDK sent. Faults
hit a seeded fraction of requests, or, with `first_write_lands_then_reset`, the first
attempt of every write: forwarded, stored by moto, and then its connection reset.

It records every request's method, path and headers (`requests`, with the SigV4
credential's key, region and service), so a test can check that a header was sent on
every request, or what each was signed with, and counts the faults it injected
(`injected`). moto serves every service on one port, so the proxy can stand for STS
and Organizations too (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_ORGANIZATIONS`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import urllib.parse
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("internal_error", "slow_down", "reset_before", "reset_after", "delay", "truncate_body")

_ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
              "<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>")


@dataclass
class FaultPlan:
    """Which faults, how often. `fraction` of requests get one of `kinds`, chosen by a
    `random.Random(seed)`; `truncate_body` only hits GETs with a body, `reset_after` and
    `first_write_lands_then_reset` only writes (PUT, POST, DELETE)."""
    fraction: float = 0.0
    kinds: tuple[str, ...] = FAULTS
    seed: int = 1
    first_write_lands_then_reset: bool = False
    delay_seconds: tuple[float, float] = (1.0, 3.0)
    # The account owning the bucket: as S3 does, a request whose
    # x-amz-expected-bucket-owner names another account gets 403 AccessDenied.
    bucket_owner: str | None = None
    # Methods answered 403 AccessDenied, as S3 answers a call the policy denies.
    deny_methods: tuple[str, ...] = ()
    # PUTs whose path contains this are held (never forwarded) until `release()`,
    # then reset: the writer is stopped in the middle of its put (a crash).
    hold_puts: str | None = None
    # Buckets and their regions: an S3 request signed for another region is answered
    # as S3 answers it (HEAD: 301 with `x-amz-bucket-region`, no body; anything else:
    # 400 AuthorizationHeaderMalformed naming the bucket's region, same header).
    bucket_regions: dict[str, str] = field(default_factory=dict)
    # Role ARNs whose STS AssumeRole is refused with 403 AccessDenied (moto grants all).
    deny_assume: tuple[str, ...] = ()
    # Organizations ListAccounts pages hold at most this many accounts (moto: 100).
    list_accounts_page: int | None = None


_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def credential(self) -> tuple[str, str, str] | None:
        """(access key, region, service) of the request's SigV4 credential scope."""
        auth = next((v for k, v in self.headers.items() if k.lower() == "authorization"), "")
        m = _SCOPE.search(auth)
        return (m.group(1), m.group(2), m.group(3)) if m else None

    def form(self) -> dict[str, str]:
        """A query-protocol (STS) body's parameters."""
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode(errors="replace")).items()}

    def target(self) -> str:
        """The `X-Amz-Target` of a JSON-protocol request (Organizations)."""
        return next((v for k, v in self.headers.items() if k.lower() == "x-amz-target"), "")


@dataclass
class FaultProxy:
    upstream: str
    plan: FaultPlan = field(default_factory=FaultPlan)
    requests: list[Seen] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)

    def start(self) -> "FaultProxy":
        up = urlsplit(self.upstream)
        self._upstream = (up.hostname, up.port)
        self._rng = random.Random(self.plan.seed)
        self._lock = threading.Lock()
        self._writes_seen: set[str] = set()
        self.holding = threading.Event()
        self._released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def release(self) -> None:
        """Ends every held PUT with a reset (none of them reaches S3) and holds no more."""
        self.plan.hold_puts = None
        self._released.set()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ one request

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1

    def _choose(self, method: str, key: str) -> tuple[str | None, float]:
        """The fault for this request (or None), and how long to delay it."""
        with self._lock:
            if self.plan.first_write_lands_then_reset and method in ("PUT", "POST", "DELETE"):
                if key not in self._writes_seen:
                    self._writes_seen.add(key)
                    return "reset_after", 0.0
                return None, 0.0
            if self._rng.random() >= self.plan.fraction:
                return None, 0.0
            kinds = [k for k in self.plan.kinds
                     if (k != "truncate_body" or method == "GET")
                     and (k != "reset_after" or method in ("PUT", "POST", "DELETE"))]
            if not kinds:
                return None, 0.0
            kind = self._rng.choice(kinds)
            delay = self._rng.uniform(*self.plan.delay_seconds) if kind == "delay" else 0.0
        return kind, delay

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = _read_body(h)
        headers = {k: v for k, v in h.headers.items()}
        seen = Seen(h.command, h.path, headers, body if h.command == "POST" else b"")
        with self._lock:
            self.requests.append(seen)
        credential = seen.credential()
        service = credential[2] if credential else ""
        if service == "sts" and self.plan.deny_assume:
            form = seen.form()
            if form.get("Action") == "AssumeRole" and form.get("RoleArn") in self.plan.deny_assume:
                return _sts_denied(h, form["RoleArn"])
        if service == "organizations" and self.plan.list_accounts_page and seen.target().endswith(".ListAccounts"):
            request = json.loads(body or b"{}")
            request["MaxResults"] = self.plan.list_accounts_page
            body = json.dumps(request).encode()
        if service == "s3" and self.plan.bucket_regions:
            bucket = urllib.parse.urlsplit(h.path).path.lstrip("/").split("/")[0]
            region = self.plan.bucket_regions.get(bucket)
            if region and credential and credential[1] != region:
                return _wrong_region(h, credential[1], region)
        # A write is known by its payload: a streamed upload (aws-chunked) signs each
        # chunk with the request's time, so a retry's bytes differ from the first's.
        key = f"{h.command} {h.path} {hashlib.sha256(_payload(headers, body)).hexdigest()}"
        expected = next((v for k, v in headers.items() if k.lower() == "x-amz-expected-bucket-owner"), None)
        if self.plan.bucket_owner and expected and expected != self.plan.bucket_owner:
            return _error(h, 403, "AccessDenied", "Access Denied")
        if h.command in self.plan.deny_methods:
            return _error(h, 403, "AccessDenied", "Access Denied")
        if h.command == "PUT" and self.plan.hold_puts and self.plan.hold_puts in h.path:
            self.holding.set()
            self._released.wait(120)
            return _reset(h)
        fault, delay = self._choose(h.command, key)
        if fault == "internal_error":
            self._count(fault)
            return _error(h, 500, "InternalError", "We encountered an internal error. Please try again.")
        if fault == "slow_down":
            self._count(fault)
            return _error(h, 503, "SlowDown", "Please reduce your request rate.")
        if fault == "reset_before":
            self._count(fault)
            return _reset(h)
        if fault == "delay":
            self._count(fault)
            time.sleep(delay)
        status, reason, out_headers, out_body = self._forward(h, headers, body)
        if fault == "reset_after":
            self._count(fault)
            return _reset(h)
        # Only an object's body (GetObject, 200) is cut short: the SDK itself retries
        # listings and error bodies, so only these exercise the exporter's own retry.
        truncate = (fault == "truncate_body" and h.command == "GET" and status == 200
                    and "list-type" not in h.path and len(out_body) > 1)
        h.send_response_only(status, reason)
        for k, v in out_headers:
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                h.send_header(k, v)
        if h.command == "HEAD":  # no body: the object's length, as upstream said
            length = next((v for k, v in out_headers if k.lower() == "content-length"), "0")
            h.send_header("Content-Length", length)
        else:
            h.send_header("Content-Length", str(len(out_body)))
        h.end_headers()
        if truncate:
            self._count("truncate_body")
            h.wfile.write(out_body[: len(out_body) // 2])
            h.wfile.flush()
            return _reset(h)
        if h.command != "HEAD":
            h.wfile.write(out_body)

    def _forward(self, h, headers: dict[str, str], body: bytes):
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            sent = {k: v for k, v in headers.items()
                    if k.lower() not in ("transfer-encoding", "connection", "content-length")}
            if body or h.command in ("PUT", "POST"):
                sent["Content-Length"] = str(len(body))
            conn.request(h.command, h.path, body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return out
            out += h.rfile.read(size)
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _payload(headers: dict[str, str], body: bytes) -> bytes:
    """The object's bytes of a PUT body: an aws-chunked body without its chunk headers
    (sizes, signatures) and trailers; any other body as it is."""
    encoding = next((v for k, v in headers.items() if k.lower() == "content-encoding"), "")
    if "aws-chunked" not in encoding:
        return body
    out, at = b"", 0
    while True:
        end = body.find(b"\r\n", at)
        if end < 0:
            return body
        size = int(body[at:end].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return out
        out += body[end + 2:end + 2 + size]
        at = end + 2 + size + 2


def _error(h: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
    body = _ERROR_XML.format(code=code, message=message).encode()
    h.send_response_only(status)
    h.send_header("Content-Type", "application/xml")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _wrong_region(h: BaseHTTPRequestHandler, signed: str, region: str) -> None:
    """S3's answer to a request signed for `signed` on a bucket in `region`."""
    if h.command == "HEAD":
        h.send_response_only(301)
        h.send_header("x-amz-bucket-region", region)
        h.send_header("Content-Length", "0")
        h.end_headers()
        return
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AuthorizationHeaderMalformed</Code>'
            f"<Message>The authorization header is malformed; the region '{signed}' is wrong; "
            f"expecting '{region}'</Message><Region>{region}</Region>"
            "<RequestId>fault-proxy</RequestId></Error>").encode()
    h.send_response_only(400)
    h.send_header("Content-Type", "application/xml")
    h.send_header("x-amz-bucket-region", region)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _sts_denied(h: BaseHTTPRequestHandler, role: str) -> None:
    """STS refusing an AssumeRole, as it does when the role's trust policy does not
    trust the caller."""
    body = ('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            "<Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/moto is not "
            f"authorized to perform: sts:AssumeRole on resource: {role}</Message></Error>"
            "<RequestId>fault-proxy</RequestId></ErrorResponse>").encode()
    h.send_response_only(403)
    h.send_header("Content-Type", "text/xml")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Closes the connection with a TCP reset (no response, or a cut-short one)."""
    h.close_connection = True
    try:
        h.wfile.flush()
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
    except OSError:
        pass
