"""A small in-memory Hugging Face Hub on 127.0.0.1 for tests: the endpoints huggingface_hub's
HfApi uses to read repo info, create repos, pre-upload and commit files, and manage collections.
It records every request and can be told to fail the next matching requests (429, 5xx). With
`rate_limit=(quota, window_s)` it limits requests as the Hub does: a fixed window of `window_s`
seconds on `clock`, every response with `RateLimit` and `RateLimit-Policy` headers, and 429 once
the window's quota is spent."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    body: bytes


class FakeHub:
    def __init__(self, rate_limit: tuple[int, int] | None = None, clock=time.monotonic):
        self.rate_limit, self.clock = rate_limit, clock
        self.window_start, self.window_used = clock(), 0
        self.repos: dict[tuple[str, str], Repo] = {}
        self.collections: dict[str, dict] = {}
        self.requests: list[Request] = []
        self.failures: list[tuple[str, re.Pattern, int, dict]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, method: str, path_pattern: str, status: int, times: int = 1, headers=None):
        for _ in range(times):
            self.failures.append((method, re.compile(path_pattern), status, headers or {}))

    def calls(self, method: str | None = None, contains: str = "") -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    # -- request handling --------------------------------------------------------------------

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with hub.lock:
                    hub.requests.append(Request(method, path, self.headers.get("Authorization"), body))
                    limited = hub._rate_limited()
                    failure = limited if limited[0] == 429 else hub._take_failure(method, path)
                    status, payload, headers = failure or hub.route(method, path, body)
                    headers = {**limited[2], **headers}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        return Handler

    def _rate_limited(self):
        """(429, …, headers) when the window's quota is spent, else (None, None, headers) counting
        this request; headers {} without a rate limit."""
        if self.rate_limit is None:
            return None, None, {}
        quota, window = self.rate_limit
        now = self.clock()
        if now - self.window_start >= window:
            self.window_start, self.window_used = now, 0
        reset = max(0, int(self.window_start + window - now + 0.999))
        policy = {"RateLimit-Policy": f'"fixed window";"api";q={quota};w={window}'}
        if self.window_used >= quota:
            return 429, {"error": "rate limited"}, {"RateLimit": f'"api";r=0;t={reset}', **policy}
        self.window_used += 1
        return None, None, {"RateLimit": f'"api";r={quota - self.window_used};t={reset}', **policy}

    def _take_failure(self, method, path):
        for i, (m, pattern, status, headers) in enumerate(self.failures):
            if m == method and pattern.search(path):
                del self.failures[i]
                return status, {"error": f"injected {status}"}, headers
        return None

    def route(self, method, path, body):
        if m := re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)", path):
            return self._repo_info(m[1][:-1], m[2])
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body))
        if path == "/api/validate-yaml":
            return 200, {}, {}
        if m := re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/preupload/main", path):
            return self._preupload(m[1][:-1], m[2], json.loads(body))
        if m := re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/commit/main", path):
            return self._commit(m[1][:-1], m[2], body)
        if path == "/api/collections" and method == "POST":
            return self._create_collection(json.loads(body))
        if m := re.fullmatch(r"/api/collections/([^/]+/[^/]+)/items", path):
            return self._add_item(m[1], json.loads(body))
        if m := re.fullmatch(r"/api/collections/([^/]+/[^/]+)", path):
            return (200, self.collections[m[1]], {}) if m[1] in self.collections else self._not_found()
        return 404, {"error": f"fake hub: no route for {method} {path}"}, {}

    @staticmethod
    def _not_found():
        return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}

    def _repo_info(self, repo_type, repo_id):
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return self._not_found()
        siblings = [{"rfilename": p, "size": len(d), "blobId": git_sha1(d)} for p, d in repo.files.items()]
        return 200, {"id": repo_id, "sha": repo.sha, "private": repo.private, "siblings": siblings}, {}

    def _create_repo(self, payload):
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this repo"}, {}
        self.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, payload.get("visibility") == "private")
        prefix = "datasets/" if repo_type == "dataset" else ""
        return 200, {"url": f"{self.url}/{prefix}{repo_id}"}, {}

    def _preupload(self, repo_type, repo_id, payload):
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return self._not_found()
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_sha1(repo.files[f["path"]]) if f["path"] in repo.files else None}
                 for f in payload["files"]]
        return 200, {"files": files}, {}

    def _commit(self, repo_type, repo_id, body):
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return self._not_found()
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        repo.sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{repo.sha}", "commitOid": repo.sha}, {}

    def _create_collection(self, payload):
        for slug, collection in self.collections.items():
            if collection["title"] == payload["title"] and collection["owner"]["name"] == payload["namespace"]:
                return 409, {"error": "Collection already exists", "slug": slug}, {}
        slug = f"{payload['namespace']}/{payload['title']}-{uuid.uuid4().hex[:24]}"
        self.collections[slug] = {
            "slug": slug, "title": payload["title"], "description": payload.get("description"),
            "owner": {"name": payload["namespace"], "type": "user"}, "items": [],
            "lastUpdated": "2026-01-01T00:00:00.000Z", "position": 0, "private": payload["private"],
            "theme": "indigo", "upvotes": 0,
        }
        return 200, self.collections[slug], {}

    def _add_item(self, slug, payload):
        collection = self.collections.get(slug)
        if collection is None:
            return self._not_found()
        item = payload["item"]
        if any(i["id"] == item["id"] and i["type"] == item["type"] for i in collection["items"]):
            return 409, {"error": "Item already in collection"}, {}
        collection["items"].append({"_id": uuid.uuid4().hex[:24], "id": item["id"], "type": item["type"],
                                    "position": len(collection["items"])})
        return 200, collection, {}
