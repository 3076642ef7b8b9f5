"""A loopback fake of the Hugging Face Hub HTTP API, driven by the *real* clients.

There is no internet here, and no open-source server implements the Hub's upload
API, so tests run ``huggingface_hub``, ``datasets``, ``timm`` and ``transformers``
against this in-memory server on ``127.0.0.1``. It answers with the shapes the
installed clients parse (huggingface_hub 2.4, datasets 5.2), including the
``X-Error-Code`` headers that ``hf_raise_for_status`` maps to
``RepositoryNotFoundError`` / ``RevisionNotFoundError`` / ``EntryNotFoundError``.

Endpoints (``{kind}`` is ``models``, ``datasets`` or ``spaces``; ``{prefix}`` is
empty for models, ``datasets/`` or ``spaces/`` otherwise; ``{repo}`` is
``namespace/name``):

- ``GET  /api/whoami-v2``
- ``POST /api/repos/create``  (409 if it exists), ``DELETE /api/repos/delete``
- ``POST /api/validate-yaml``  (400 with ``errors`` for unparsable YAML front matter)
- ``GET  /api/{kind}/{repo}[/revision/{rev}]``  (``sha``, ``siblings``, ``private``,
  ``lastModified``, ``cardData``...; ``?blobs=true`` adds sizes and LFS info;
  ``?expand=`` keeps only the listed keys)
- ``GET  /api/{kind}/{repo}/tree/{rev}[/{path}]``  (``?recursive=``, ``?expand=`` adds ``lastCommit``)
- ``POST /api/{kind}/{repo}/paths-info/{rev}``  (form or JSON ``paths``)
- ``GET  /api/{kind}/{repo}/commits/{rev}``, ``GET /api/{kind}/{repo}/refs``
- ``POST|DELETE /api/{kind}/{repo}/branch/{branch}``
- ``PUT  /api/{kind}/{repo}/settings``  (``private`` / ``visibility``)
- ``POST /api/{kind}/{repo}/preupload/{rev}``  (``uploadMode`` lfs/regular, remote ``oid``)
- ``POST /api/{kind}/{repo}/commit/{branch}``  (NDJSON ``header``, ``file``, ``lfsFile``,
  ``deletedFile``, ``deletedFolder``; atomic; ``parentCommit`` checked, 412 if stale)
- ``POST /{prefix}{repo}.git/info/lfs/objects/batch``  (basic transfer, with a verify action)
  and ``POST /{prefix}{repo}.git/info/lfs/objects/verify``
- ``PUT  /__fake_lfs__/{type}/{repo}/{oid}``: the upload href the batch answer hands out, a
  stand-in for S3 (no Hub auth, like a presigned URL); checks sha256 and the announced size
- ``HEAD|GET /{prefix}{repo}/resolve/{rev}/{path}``  (``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS files, ``Content-Length``,
  ``Accept-Ranges``; a single ``Range`` gets 206, an unsatisfiable one 416)

Errors: missing repo → 404 ``RepoNotFound`` (401 for a private repo without a valid
token, like the Hub); missing revision → 404 ``RevisionNotFound``; missing file → 404
``EntryNotFound`` (with ``X-Repo-Commit``); an invalid ``Authorization`` token → 401;
writes without a token → 401. Anything else → 404 with ``X-Error-Code: FakeHubUnhandled``
(also recorded in ``FakeHub.unhandled``) so a client calling an endpoint the fake lacks
fails loudly instead of silently.

Storage is in memory. Every commit makes a new immutable revision (40-hex sha) whose
file map is never modified, so older revisions stay readable; a commit is applied under
one lock after all of its operations validated (all files or none). A new repo gets an
"initial commit" holding the Hub's default ``.gitattributes``.

Test controls on :class:`FakeHub`: ``fail_next(method, path_regex, status, count)``,
``stop()`` / ``start()`` / ``offline()`` (connection refused on the same port),
``requests`` (every request: method, path, query, headers, body), and direct state
helpers (``create_repo``, ``commit_files``, ``read_file``, ``list_files``, ``commits``,
``head``) to seed or inspect repos without going through HTTP.

Every response closes its connection, so nothing pooled keeps talking to a stopped server.
"""
from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import http.server
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.client import HTTPMessage
from typing import Any
from urllib.parse import parse_qs, unquote

import yaml

FAKE_USER = "fake-user"
DEFAULT_BRANCH = "main"
# The Hub stores text files under 10 MB in git; anything bigger must go through LFS.
REGULAR_FILE_MAX_BYTES = 10 * 1024 * 1024

REPO_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# What the Hub writes into a new repo (trimmed to the patterns that matter here).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib",
        "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot",
        "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors",
        "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip",
        "*.zst", "*tfevents*", "*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif", "*.mp3", "*.wav",
    )
)


def _now() -> str:
    """The Hub's timestamp format (``parse_datetime`` wants ``%Y-%m-%dT%H:%M:%S.%fZ``)."""
    seconds = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


def _git_blob_oid(data: bytes) -> str:
    """``git hash-object``: what the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An HTTP error answer, with the Hub's error headers."""

    def __init__(self, status: int, message: str, error_code: str | None = None,
                 headers: Mapping[str, str] | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})
        self.body = body


@dataclass(frozen=True)
class StoredFile:
    """One file in one revision; immutable and shared between revisions."""

    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return _lfs_pointer(self.sha256, self.size)

    @property
    def git_oid(self) -> str:
        # For an LFS file git stores the pointer, so the blob id is the pointer's.
        return _git_blob_oid(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    date: str
    files: Mapping[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    object_id: str = field(default_factory=lambda: secrets.token_hex(12))
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    # Size announced in the LFS batch call, checked when the bytes arrive.
    lfs_expected_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def url_path(self) -> str:
        return URL_PREFIXES[self.repo_type] + self.repo_id


@dataclass
class InjectedFault:
    """A pending ``fail_next`` rule; ``hits`` counts the requests it answered."""

    method: str
    path_regex: re.Pattern
    status: int
    remaining: int
    message: str
    error_code: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and bool(self.path_regex.search(path))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (``headers`` is case-insensitive on ``get``)."""

    method: str
    path: str
    query: str
    headers: HTTPMessage
    body: bytes

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


def _parse_front_matter(text: str) -> dict | None:
    """YAML front matter of a README as a dict; None when there is none; HubError if invalid."""
    if not text.startswith("---"):
        return None
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.DOTALL)
    if match is None:
        match = re.match(r"^---[ \t]*\r?\n---[ \t]*(\r?\n|$)", text)
        if match is None:
            raise HubError(400, "README.md front matter is not closed by '---'")
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        raise HubError(400, f"Invalid YAML in README.md front matter: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HubError(400, "README.md front matter must be a YAML mapping")
    return data


def _lfs_patterns(files: Mapping[str, StoredFile]) -> list[str]:
    attributes = files.get(".gitattributes")
    text = attributes.data.decode("utf-8", "replace") if attributes else DEFAULT_GITATTRIBUTES
    return [line.split()[0] for line in text.splitlines()
            if line.strip() and not line.startswith("#") and "filter=lfs" in line.split()[1:]]


def _matches_lfs(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        target = path if "/" in pattern else name
        if fnmatch.fnmatchcase(target, pattern.replace("**/", "*")):
            return True
    return False


class FakeHub:
    """In-memory Hub state plus a threaded HTTP server on 127.0.0.1.

    ``url`` and ``token`` are what clients need; the same port is kept across
    ``stop()`` / ``start()`` so clients configured once keep working.
    """

    def __init__(self, token: str | None = None, host: str = "127.0.0.1", port: int = 0):
        self.token = token or "hf_fake_" + secrets.token_hex(16)
        self.host = host
        self.port = port
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[str] = []
        self._faults: list[InjectedFault] = []
        self._lock = threading.RLock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> "FakeHub":
        """Listen (again) on the same port; state survives a stop/start."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        httpd = http.server.ThreadingHTTPServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-hub-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: clients get 'connection refused' until ``start()``."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    close = stop

    @contextlib.contextmanager
    def offline(self) -> Iterator["FakeHub"]:
        """Simulate the Hub being unreachable inside the block, then come back."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every repo, fault and logged request."""
        with self._lock:
            self.repos.clear()
            self.requests.clear()
            self.unhandled.clear()
            self._faults.clear()

    # ---- fault injection and inspection ----------------------------------------------------
    def fail_next(self, method: str, path_regex: str, status: int = 500, count: int = 1,
                  message: str = "Injected failure (fake Hub)", error_code: str | None = None) -> InjectedFault:
        """Answer the next ``count`` requests matching ``method`` ('*' = any) and
        ``path_regex`` (``re.search`` on the URL-decoded path, without the query) with ``status``.

        Useful targets: ``r"/commit/"`` (the commit POST), ``r"^/__fake_lfs__/"`` (LFS uploads),
        ``r"/preupload/"``, ``r"\.git/info/lfs/objects/batch"``, ``r"/resolve/"`` (downloads).

        Note that huggingface_hub retries 429/5xx with backoff on some calls (LFS PUT,
        preupload, LFS batch: up to 5 retries, sleeping 1, 2, 4... s); use a 4xx status
        or a large ``count`` to make such a step fail for good. The commit POST is not retried.
        """
        fault = InjectedFault(method.upper(), re.compile(path_regex), status, count, message, error_code)
        with self._lock:
            self._faults.append(fault)
        return fault

    def requests_matching(self, method: str = "*", path_regex: str = "") -> list[RecordedRequest]:
        """Logged requests filtered by method ('*' = any) and ``re.search`` on the path."""
        pattern = re.compile(path_regex)
        with self._lock:
            return [r for r in self.requests
                    if method.upper() in ("*", r.method) and pattern.search(r.path)]

    # ---- direct state access (seed / inspect without HTTP) ---------------------------------------
    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                    exist_ok: bool = False) -> Repo:
        """Create a repo with the Hub's initial ``.gitattributes`` commit."""
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        if repo_id.count("/") != 1 or not all(re.fullmatch(r"[\w.\-]+", part) for part in repo_id.split("/")) \
                or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
            raise HubError(400, f"Invalid repo id {repo_id!r}")
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                if exist_ok:
                    return self.repos[key]
                raise HubError(409, f"You already created this {repo_type} repo", None,
                               body={"error": f"You already created this {repo_type} repo",
                                     "url": f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"})
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            self.repos[key] = repo
            self._add_commit(repo, DEFAULT_BRANCH, None, "initial commit", "",
                             {".gitattributes": StoredFile(DEFAULT_GITATTRIBUTES.encode(), lfs=False)})
            return repo

    def commit_files(self, repo_id: str, files: Mapping[str, bytes | None], *, repo_type: str = "model",
                     branch: str = DEFAULT_BRANCH, message: str = "Seed files") -> str:
        """Commit ``{path: bytes}`` (``None`` deletes) directly; creates the repo if needed. Returns the sha."""
        with self._lock:
            repo = self.repos.get((repo_type, repo_id)) or self.create_repo(repo_id, repo_type=repo_type)
            head = repo.commits[repo.branches[branch]]
            new_files = dict(head.files)
            patterns = _lfs_patterns(new_files)
            for path, data in files.items():
                if data is None:
                    new_files.pop(path, None)
                else:
                    lfs = _matches_lfs(path, patterns) or len(data) >= REGULAR_FILE_MAX_BYTES or b"\0" in data[:512]
                    new_files[path] = StoredFile(bytes(data), lfs=lfs)
                    if lfs:
                        repo.lfs_objects[new_files[path].sha256] = new_files[path].data
            return self._add_commit(repo, branch, head.sha, message, "", new_files).sha

    def head(self, repo_id: str, *, repo_type: str = "model", branch: str = DEFAULT_BRANCH) -> str:
        """Commit sha the branch points to."""
        with self._lock:
            return self._get_repo(repo_type, repo_id).branches[branch]

    def commits(self, repo_id: str, *, repo_type: str = "model", branch: str = DEFAULT_BRANCH) -> list[str]:
        """Shas of the branch history, newest first."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return [c.sha for c in self._history(repo, repo.branches[branch])]

    def list_files(self, repo_id: str, *, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """``{path: bytes}`` of a revision (branch or sha)."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return {path: f.data for path, f in self._get_commit(repo, revision).files.items()}

    def read_file(self, repo_id: str, path: str, *, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> bytes:
        files = self.list_files(repo_id, repo_type=repo_type, revision=revision)
        if path not in files:
            raise KeyError(f"{path!r} is not in {repo_type} {repo_id}@{revision}")
        return files[path]

    # ---- internals -------------------------------------------------------------------------------------
    def _get_repo(self, repo_type: str, repo_id: str, auth: str | None = "valid") -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and auth != "valid"):
            # The Hub hides private repos behind the same error as missing ones.
            status = 401 if repo is not None and auth is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    def _resolve_revision(self, repo: Repo, revision: str) -> str:
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/"):]
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            matches = [sha for sha in repo.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _get_commit(self, repo: Repo, revision: str) -> Commit:
        return repo.commits[self._resolve_revision(repo, revision)]

    def _history(self, repo: Repo, sha: str | None) -> list[Commit]:
        history = []
        while sha is not None:
            commit = repo.commits[sha]
            history.append(commit)
            sha = commit.parent
        return history

    def _add_commit(self, repo: Repo, branch: str, parent: str | None, title: str, message: str,
                    files: dict[str, StoredFile]) -> Commit:
        seed = json.dumps([parent, title, message, sorted((p, f.git_oid) for p, f in files.items()),
                           secrets.token_hex(8)]).encode()
        commit = Commit(sha=hashlib.sha1(seed).hexdigest(), parent=parent, title=title, message=message,
                        date=_now(), files=dict(files))
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    def _last_commit(self, repo: Repo, sha: str, path: str) -> Commit:
        """Newest commit (from ``sha`` back) that changed ``path`` (file or folder)."""
        def state(commit: Commit) -> Any:
            if path in commit.files:
                return commit.files[path].git_oid
            prefix = path + "/"
            return tuple(sorted((p, f.git_oid) for p, f in commit.files.items() if p.startswith(prefix)))

        history = self._history(repo, sha)
        for commit, older in zip(history, history[1:]):
            if state(commit) != state(older):
                return commit
        return history[-1]


def _file_entry(path: str, stored: StoredFile) -> dict:
    entry: dict[str, Any] = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
    if stored.lfs:
        entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(stored.pointer)}
    return entry


def _folder_entry(path: str, commit: Commit) -> dict:
    prefix = path + "/"
    listing = sorted((p, f.git_oid) for p, f in commit.files.items() if p.startswith(prefix))
    return {"type": "directory", "oid": hashlib.sha1(json.dumps(listing).encode()).hexdigest(), "path": path}


def _folders(files: Mapping[str, StoredFile]) -> set[str]:
    folders = set()
    for path in files:
        parts = path.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return folders


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes one request to the FakeHub bound as ``hub`` on the subclass."""

    hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass  # keep test output clean

    # Every method goes through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    # ---- plumbing ------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        merged = {"Content-Type": content_type, "Content-Length": str(len(body)), "Connection": "close",
                  "X-Request-Id": secrets.token_hex(8)}
        merged.update(headers or {})
        for key, value in merged.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD" and body:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a client that read only what it needed (range reads) may hang up early

    def _send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message.splitlines()[0][:500]}
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        headers.update(error.headers)
        body = error.body if error.body is not None else {"error": error.message}
        self._send_json(body, error.status, headers)

    def _auth(self) -> str | None:
        """None (no token), 'valid', or raises 401 for a wrong token."""
        header = self.headers.get("Authorization")
        if not header:
            return None
        if header == f"Bearer {self.hub.token}":
            return "valid"
        raise HubError(401, "Invalid credentials in Authorization header")

    def _require_write(self, auth: str | None) -> None:
        if auth != "valid":
            raise HubError(401, "Invalid username or password.")

    # ---- dispatch -----------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        hub = self.hub
        raw_path, _, query = self.path.partition("?")
        body = self._read_body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else b""
        with hub._lock:
            hub.requests.append(RecordedRequest(self.command, unquote(raw_path), query, self.headers, body))
            fault = next((f for f in hub._faults if f.matches(self.command, unquote(raw_path))), None)
            if fault is not None:
                fault.remaining -= 1
                fault.hits += 1
        try:
            if fault is not None:
                raise HubError(fault.status, fault.message, fault.error_code)
            segments = [unquote(s) for s in raw_path.split("/")[1:]]
            self._route(segments, parse_qs(query, keep_blank_values=True), body)
        except HubError as error:
            self._send_error(error)
        except Exception as error:  # a bug in the fake must surface as a 500, not a hung client
            self._send_error(HubError(500, f"Fake Hub internal error: {type(error).__name__}: {error}"))

    def _route(self, seg: list[str], query: dict[str, list[str]], body: bytes) -> None:
        method = self.command
        if len(seg) == 5 and seg[0] == "__fake_lfs__":
            return self._lfs_storage(seg[1], "/".join(seg[2:4]), seg[4], body)
        auth = self._auth()
        if seg[:1] == ["api"]:
            rest = seg[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami(auth)
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo(auth, body)
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo(auth, body)
            if rest == ["validate-yaml"] and method == "POST":
                return self._validate_yaml(body)
            if len(rest) >= 3 and rest[0] in REPO_KINDS:
                return self._repo_api(REPO_KINDS[rest[0]], "/".join(rest[1:3]), rest[3:], query, body, auth)
        else:
            repo_type = "model"
            if seg and seg[0] in REPO_KINDS and seg[0] != "models":
                repo_type, seg = REPO_KINDS[seg[0]], seg[1:]
            if len(seg) == 6 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"] \
                    and method == "POST":
                if seg[5] == "batch":
                    return self._lfs_batch(repo_type, f"{seg[0]}/{seg[1][:-4]}", body, auth)
                if seg[5] == "verify":
                    return self._lfs_verify(repo_type, f"{seg[0]}/{seg[1][:-4]}", body, auth)
            if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]), auth)
        self.hub.unhandled.append(f"{method} {self.path}")
        raise HubError(404, f"The fake Hub does not implement {method} {self.path.partition('?')[0]}",
                       "FakeHubUnhandled")

    # ---- account / repo management ------------------------------------------------------------------------
    def _whoami(self, auth: str | None) -> None:
        self._require_write(auth)
        self._send_json({"type": "user", "id": "0" * 24, "name": FAKE_USER, "fullname": "Fake User",
                         "orgs": [], "auth": {"type": "access_token",
                                              "accessToken": {"displayName": "fake", "role": "write"}}})

    def _create_repo(self, auth: str | None, body: bytes) -> None:
        self._require_write(auth)
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        name = payload.get("name")
        if not name:
            raise HubError(400, "Missing repo name")
        repo_id = f"{payload.get('organization') or FAKE_USER}/{name}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo = self.hub.create_repo(repo_id, repo_type=repo_type, private=private)
        self._send_json({"url": f"{self.hub.url}/{repo.url_path}", "name": repo_id, "id": repo.object_id})

    def _delete_repo(self, auth: str | None, body: bytes) -> None:
        self._require_write(auth)
        payload = json.loads(body or b"{}")
        repo_id = f"{payload.get('organization') or FAKE_USER}/{payload.get('name')}"
        with self.hub._lock:
            key = (payload.get("type") or "model", repo_id)
            if key not in self.hub.repos:
                raise HubError(404, "Repository not found", "RepoNotFound")
            del self.hub.repos[key]
        self._send(200)

    def _validate_yaml(self, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        try:
            _parse_front_matter(payload.get("content") or "")
        except HubError as error:
            raise HubError(400, error.message, body={"errors": [{"message": error.message}], "warnings": []})
        self._send_json({"errors": [], "warnings": []})

    # ---- repo API -------------------------------------------------------------------------------------------
    def _repo_api(self, repo_type: str, repo_id: str, rest: list[str], query: dict[str, list[str]],
                  body: bytes, auth: str | None) -> None:
        hub, method = self.hub, self.command
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id, auth)
            action = rest[0] if rest else ""
            if method == "GET" and (not rest or (action == "revision" and len(rest) >= 2)):
                revision = "/".join(rest[1:]) if rest else DEFAULT_BRANCH
                return self._send_json(self._repo_info(repo, revision, query))
            if method == "GET" and action == "tree" and len(rest) >= 2:
                return self._tree(repo, rest[1], "/".join(rest[2:]), query)
            if method == "POST" and action == "paths-info" and len(rest) == 2:
                return self._paths_info(repo, rest[1], body)
            if method == "GET" and action == "commits" and len(rest) >= 2:
                return self._list_commits(repo, "/".join(rest[1:]))
            if method == "GET" and action == "refs":
                return self._send_json({
                    "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                                 for b, sha in repo.branches.items()],
                    "converts": [], "tags": [], "pullRequests": []})
            self._require_write(auth)
            if action == "branch" and len(rest) >= 2:
                return self._branch(repo, "/".join(rest[1:]), body)
            if method == "PUT" and action == "settings":
                payload = json.loads(body or b"{}")
                if "private" in payload:
                    repo.private = bool(payload["private"])
                if "visibility" in payload:
                    repo.private = payload["visibility"] == "private"
                return self._send_json({})
            if method == "POST" and action == "preupload" and len(rest) >= 2:
                return self._preupload(repo, "/".join(rest[1:]), body)
            if method == "POST" and action == "commit" and len(rest) >= 2:
                if _truthy(query.get("create_pr")):
                    raise HubError(400, "The fake Hub does not support pull requests (create_pr)")
                return self._commit(repo, "/".join(rest[1:]), body)
        hub.unhandled.append(f"{method} {self.path}")
        raise HubError(404, f"The fake Hub does not implement {method} {self.path.partition('?')[0]}",
                       "FakeHubUnhandled")

    def _repo_info(self, repo: Repo, revision: str, query: dict[str, list[str]]) -> dict:
        commit = self.hub._get_commit(repo, revision)
        with_blobs = _truthy(query.get("blobs"))
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.lfs:
                    sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256,
                                      "pointerSize": len(stored.pointer)}
            siblings.append(sibling)
        card = None
        if "README.md" in commit.files:
            with contextlib.suppress(HubError):
                card = _parse_front_matter(commit.files["README.md"].data.decode("utf-8", "replace"))
        info: dict[str, Any] = {
            "_id": repo.object_id, "id": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": commit.sha, "lastModified": commit.date, "createdAt": repo.created_at,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": list((card or {}).get("tags") or []), "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if card is not None:
            info["cardData"] = card
        if repo.repo_type == "model":
            info.update(library_name=(card or {}).get("library_name"), pipeline_tag=(card or {}).get("pipeline_tag"),
                        spaces=[])
        expand = query.get("expand") or query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return info

    def _tree(self, repo: Repo, revision: str, path: str, query: dict[str, list[str]]) -> None:
        commit = self.hub._get_commit(repo, revision)
        path = path.strip("/")
        folders = _folders(commit.files)
        if path and path not in folders:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound",
                           {"X-Repo-Commit": commit.sha})
        prefix = path + "/" if path else ""
        recursive = _truthy(query.get("recursive"))

        def wanted(candidate: str) -> bool:
            return candidate.startswith(prefix) and (recursive or "/" not in candidate[len(prefix):])

        entries = [_folder_entry(p, commit) for p in sorted(folders) if wanted(p)]
        entries += [_file_entry(p, f) for p, f in sorted(commit.files.items()) if wanted(p)]
        if _truthy(query.get("expand")):
            for entry in entries:
                last = self.hub._last_commit(repo, commit.sha, entry["path"])
                entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        self._send_json(entries)

    def _paths_info(self, repo: Repo, revision: str, body: bytes) -> None:
        commit = self.hub._get_commit(repo, revision)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy(form.get("expand"))
        folders = _folders(commit.files)
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                entries.append(_file_entry(path, commit.files[path]))
            elif path in folders:
                entries.append(_folder_entry(path, commit))
            else:
                continue  # the Hub silently skips missing paths
            if expand:
                last = self.hub._last_commit(repo, commit.sha, path)
                entries[-1]["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        self._send_json(entries)

    def _list_commits(self, repo: Repo, revision: str) -> None:
        sha = self.hub._resolve_revision(repo, revision)
        self._send_json([{"id": c.sha, "title": c.title, "message": c.message, "date": c.date,
                          "authors": [{"user": FAKE_USER, "avatar": ""}]}
                         for c in self.hub._history(repo, sha)])

    def _branch(self, repo: Repo, branch: str, body: bytes) -> None:
        if self.command == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == DEFAULT_BRANCH:
                raise HubError(403, "Cannot delete the default branch")
            del repo.branches[branch]
            return self._send_json({})
        if self.command != "POST":
            raise HubError(405, f"{self.command} not allowed on a branch")
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        payload = json.loads(body or b"{}")
        repo.branches[branch] = self.hub._resolve_revision(repo, payload.get("startingPoint") or DEFAULT_BRANCH)
        self._send_json({})

    # ---- upload --------------------------------------------------------------------------------------------
    def _preupload(self, repo: Repo, revision: str, body: bytes) -> None:
        commit = self.hub._get_commit(repo, revision)
        payload = json.loads(body or b"{}")
        patterns = _lfs_patterns(commit.files)
        answers = []
        for item in payload.get("files") or []:
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample") or "")
            lfs = size >= REGULAR_FILE_MAX_BYTES or _matches_lfs(path, patterns) or b"\0" in sample
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                # Client compares this with sha256 (LFS) or the git blob sha1 (regular) of its copy.
                oid = existing.sha256 if lfs else _git_blob_oid(existing.data)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answers, "commitOid": commit.sha})

    def _lfs_batch(self, repo_type: str, repo_id: str, body: bytes, auth: str | None) -> None:
        self._require_write(auth)
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload":
            raise HubError(400, "The fake Hub's LFS batch endpoint only supports uploads")
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, auth)
            storage = f"{self.hub.url}/__fake_lfs__/{repo_type}/{repo_id}"
            objects = []
            for obj in payload.get("objects") or []:
                oid, size = obj.get("oid"), obj.get("size")
                if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int)):
                    objects.append({"oid": str(oid), "size": int(size or 0),
                                    "error": {"code": 422, "message": "Invalid oid or size"}})
                elif oid in repo.lfs_objects:
                    objects.append({"oid": oid, "size": size})  # already stored: nothing to upload
                else:
                    repo.lfs_expected_sizes[oid] = size
                    objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                        "upload": {"href": f"{storage}/{oid}", "header": {}},
                        "verify": {"href": f"{self.hub.url}/{repo.url_path}.git/info/lfs/objects/verify",
                                   "header": {}}}})
        self._send(200, json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_storage(self, repo_type: str, repo_id: str, oid: str, body: bytes) -> None:
        """The upload href handed out by the batch answer (a stand-in for S3: no Hub auth)."""
        if self.command != "PUT":
            raise HubError(405, f"{self.command} not allowed on LFS storage")
        with self.hub._lock:
            repo = self.hub.repos.get((repo_type, repo_id))
            if repo is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, f"Uploaded content does not match sha256 {oid}")
            expected = repo.lfs_expected_sizes.get(oid)
            if expected is not None and expected != len(body):
                raise HubError(400, f"Uploaded {len(body)} bytes, batch announced {expected}")
            repo.lfs_objects[oid] = body
        self._send(200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, body: bytes, auth: str | None) -> None:
        self._require_write(auth)
        payload = json.loads(body or b"{}")
        with self.hub._lock:
            stored = self.hub._get_repo(repo_type, repo_id, auth).lfs_objects.get(payload.get("oid"))
        if stored is None or len(stored) != payload.get("size"):
            raise HubError(404, "LFS object not found or size mismatch")
        self._send_json({"message": "Verified"})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        if revision not in repo.branches:
            if revision in repo.commits:
                raise HubError(400, f"Cannot commit to a commit sha ({revision}); use a branch")
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        head = repo.commits[repo.branches[revision]]
        try:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HubError(400, f"Commit payload is not valid NDJSON: {error}") from None
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and parent != head.sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        summary = (header.get("summary") or "").strip()
        if not summary:
            raise HubError(400, "Commit summary (message) is required")
        # Build the new file map on the side: nothing is visible until every operation validated.
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            bad_path = not path or path.startswith("/") or ".." in path.split("/") or "//" in path
            if bad_path or (path.endswith("/") and key != "deletedFolder"):
                raise HubError(400, f"Invalid path in commit: {path!r}")
            if key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                if len(data) >= REGULAR_FILE_MAX_BYTES:
                    raise HubError(400, f"{path} is larger than 10 MB and must be uploaded with LFS")
                files[path] = StoredFile(data, lfs=False)
            elif key == "lfsFile":
                oid = value.get("oid")
                data = repo.lfs_objects.get(oid)
                if data is None:
                    raise HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that "
                                        f"does not exist: {path} ({oid})")
                if value.get("size") is not None and int(value["size"]) != len(data):
                    raise HubError(400, f"LFS object size mismatch for {path}")
                files[path] = StoredFile(data, lfs=True)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        commit = self.hub._add_commit(repo, revision, head.sha, summary, header.get("description") or "", files)
        self._send_json({"success": True, "commitOid": commit.sha, "hookOutput": "",
                         "commitUrl": f"{self.hub.url}/{repo.url_path}/commit/{commit.sha}",
                         "pullRequestUrl": None})

    # ---- download ------------------------------------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, auth: str | None) -> None:
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, auth)
            commit = self.hub._get_commit(repo, revision)
            stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        data, status = stored.data, 200
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
            if match and (match.group(1) or match.group(2)):
                total = len(data)
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
                else:  # suffix range: the last N bytes
                    start, end = max(total - int(match.group(2)), 0), total - 1
                if start >= total or end < start:
                    raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{total}"})
                data, status = data[start:end + 1], 206
                headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        self._send(status, data, headers, content_type="application/octet-stream")

