"""A loopback front for several AppFlow emulators, one per (account, region), as AWS
is one service per region and account: what tests of `--region a,b` and `--role-arn`
need, since `AWS_ENDPOINT_URL_APPFLOW` sends every region to one URL.

- STS (`POST /`, query protocol): `AssumeRole` returns credentials whose access key
  names the role's account (`ASIA<account>...`); `GetCallerIdentity` answers with the
  account of the calling key (the base account for the process's own key).
- AppFlow (every other path): the request goes to the emulator of the account of its
  access key and the region of its SigV4 credential scope, unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_SCOPE = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
_STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"


class Router:
    def __init__(self, emulators: dict[tuple[str, str], str], base_account: str):
        self.emulators, self.base_account = emulators, base_account
        self.assumed: list[str] = []  # role ARNs, in the order they were assumed
        self.calls: Counter = Counter()  # (account, region, path) -> requests
        router = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                router.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def account_of(self, access_key: str) -> str:
        return access_key[4:16] if access_key.startswith("ASIA") else self.base_account

    def handle(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        scope = _SCOPE.search(req.headers.get("authorization", ""))
        if not scope:
            return self.reply(req, 403, b"unsigned request", "text/plain")
        key, region, service = scope.groups()
        account = self.account_of(key)
        if service == "sts":
            return self.sts(req, urllib.parse.parse_qs(body.decode()), account)
        self.calls[(account, region, req.path)] += 1
        target = self.emulators.get((account, region))
        if target is None:
            return self.reply(req, 400, b'{"message":"no such region in this test"}', "application/json",
                              {"x-amzn-ErrorType": "UnrecognizedClientException"})
        forward = urllib.request.Request(target + req.path, data=body, method="POST",
                                         headers={"content-type": req.headers.get("content-type", "")})
        try:
            with urllib.request.urlopen(forward, timeout=60) as resp:
                status, data, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            status, data, headers = err.code, err.read(), err.headers
        extra = {k: v for k, v in headers.items() if k.lower() == "x-amzn-errortype"}
        self.reply(req, status, data, headers.get("content-type", "application/json"), extra)

    def sts(self, req, form: dict, account: str) -> None:
        action = form.get("Action", [""])[0]
        if action == "AssumeRole":
            role = form["RoleArn"][0]
            self.assumed.append(role)
            role_account = role.split(":")[4]
            expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            result = (f"<AssumeRoleResult><Credentials><AccessKeyId>ASIA{role_account}XYZ</AccessKeyId>"
                      f"<SecretAccessKey>secret</SecretAccessKey><SessionToken>token</SessionToken>"
                      f"<Expiration>{expires}</Expiration></Credentials>"
                      f"<AssumedRoleUser><AssumedRoleId>AROA:{form['RoleSessionName'][0]}</AssumedRoleId>"
                      f"<Arn>{role.replace(':role/', ':assumed-role/')}/s</Arn></AssumedRoleUser></AssumeRoleResult>")
        elif action == "GetCallerIdentity":
            result = (f"<GetCallerIdentityResult><Arn>arn:aws:iam::{account}:user/test</Arn>"
                      f"<UserId>AIDA</UserId><Account>{account}</Account></GetCallerIdentityResult>")
        else:
            return self.reply(req, 400, b"<ErrorResponse/>", "text/xml")
        xml = (f'<{action}Response xmlns="{_STS_NS}">{result}'
               f"<ResponseMetadata><RequestId>0</RequestId></ResponseMetadata></{action}Response>")
        self.reply(req, 200, xml.encode(), "text/xml")

    @staticmethod
    def reply(req, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        req.send_response(status)
        req.send_header("content-type", content_type)
        req.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(body)
