"""A loopback fake of the OpenAI images API, driven by the *real* ``openai`` client.

openai 3.x talks through ``httpx2``, which ``respx`` does not intercept, so tests
point ``openai.OpenAI(base_url=fake.base_url, api_key=...)`` (or
``OPENAI_BASE_URL``) at this server on ``127.0.0.1``.

Endpoints:

- ``POST /v1/images/generations`` (JSON: ``prompt``, ``model``, ``n``, ``size``, ``quality``...)
- ``POST /v1/images/edits`` (multipart: ``image`` or ``image[]`` files, ``prompt``,
  ``model``, ``input_fidelity``...)

Both answer like the API does for GPT image models: ``{"created", "data":
[{"b64_json": <PNG>}], "output_format", "quality", "size", "usage"}``. The PNG is
real and small (``image_size``, 64x64 by default); its colours depend on the
prompt, an edit's picture is derived from the uploaded image, and each carries a
``tEXt`` chunk (``fake-openai: <request number>``) so a test can tell whether
the bytes were kept as returned. ``revised_prompts=True`` adds a
``revised_prompt`` (GPT image models do not send one).

Checks a real server makes: ``Authorization: Bearer <api_key>`` (401
``invalid_api_key`` otherwise; the message echoes the key in full, which is
*worse* than OpenAI's masked echo, so leaks are caught), ``model`` present and
not retired (400), ``prompt`` present (400).

Scripted failures: :meth:`FakeOpenAI.fail_next` with a kind from :data:`FAILURES`
(for ``count`` matching requests, or forever with ``count=None``), optionally
only for one endpoint or prompts containing some text. ``delay`` slows every
answer down. Every request is recorded in ``requests`` (method, path, headers,
JSON or form fields, uploaded files, the status answered, the image bytes sent);
``max_in_flight`` is the most requests it was answering at once.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

RETIRED_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1")

# kind -> (status, error type, error code, message). None status: not an HTTP error.
FAILURES: dict[str, tuple[int | None, str | None, str | None, str]] = {
    "invalid_key": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
    "permission": (403, "invalid_request_error", "model_not_allowed",
                   "Your organization must be verified to use the model `{model}`."),
    "rate_limit": (429, "requests", "rate_limit_exceeded",
                   "Rate limit reached for {model} in organization org-fake on images per minute."),
    "quota": (429, "insufficient_quota", "insufficient_quota",
              "You exceeded your current quota, please check your plan and billing details."),
    "content_policy": (400, "image_generation_user_error", "content_policy_violation",
                       "Your request was rejected as a result of our safety system."),
    "moderation": (400, "image_generation_user_error", "moderation_blocked",
                   "Your request was rejected by the safety system. safety_violations=[sexual]."),
    "bad_request": (400, "invalid_request_error", "invalid_value",
                    "Invalid value for 'size': the requested size is not supported."),
    "server": (500, "server_error", None, "The server had an error while processing your request."),
    "unavailable": (503, "server_error", None, "The engine is currently overloaded, please try again later."),
    "slow": (None, None, None, "answer after `delay` seconds (to trigger a client timeout)"),
    "drop": (None, None, None, "close the connection without answering"),
    "garbage": (None, None, None, "200 whose b64_json is not an image"),
    "no_image": (None, None, None, "200 with an empty data list"),
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str, str, bytes]] = field(default_factory=list)   # (field, filename, mime, bytes)
    status: int | None = None
    outcome: str = ""                      # "ok" or the failure kind
    image: bytes | None = None             # the image bytes sent back

    @property
    def fields(self) -> dict[str, Any]:
        """The request's parameters, whether sent as JSON or as a form."""
        return dict(self.json or self.form)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class _Rule:
    kind: str
    remaining: int | None
    endpoint: str | None
    prompt_contains: str | None
    retry_after: str | None
    delay: float | None

    def matches(self, endpoint: str, prompt: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        return self.prompt_contains is None or self.prompt_contains in prompt


def render_png(seed_text: str, size: tuple[int, int], *, base: Image.Image | None = None, tag: str = "") -> bytes:
    """A small real PNG whose colours depend on ``seed_text`` (a face-like ellipse on a tint)."""
    digest = hashlib.sha256(seed_text.encode()).digest()
    if base is not None:
        image = base.convert("RGB").resize(size)
        image = Image.blend(image, Image.new("RGB", size, tuple(digest[:3])), 0.3)
    else:
        image = Image.new("RGB", size, tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.25, h * 0.15, w * 0.75, h * 0.85), fill=tuple(digest[3:6]))
    draw.ellipse((w * 0.35, h * 0.35, w * 0.45, h * 0.45), fill=tuple(digest[6:9]))
    draw.ellipse((w * 0.55, h * 0.35, w * 0.65, h * 0.45), fill=tuple(digest[6:9]))
    info = PngInfo()
    info.add_text("fake-openai", tag or seed_text[:40])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


class FakeOpenAI:
    """The server. ``start()`` / ``stop()``; ``base_url`` ends in ``/v1``."""

    def __init__(self, *, api_key: str = "sk-test-fakeface-0123456789abcdef", image_size: tuple[int, int] = (64, 64),
                 delay: float = 0.0, revised_prompts: bool = False):
        self.api_key = api_key
        self.image_size = image_size
        self.delay = delay
        self.revised_prompts = revised_prompts
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0                 # most requests being answered at once
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        # A short poll interval makes stop() (and so every test teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, kind: str, count: int | None = 1, *, endpoint: str | None = None,
                  prompt_contains: str | None = None, retry_after: float | str | None = None,
                  delay: float | None = None) -> None:
        """Answer the next ``count`` matching requests (``None``: all of them) with failure ``kind``.

        ``endpoint`` is ``"generations"`` or ``"edits"``; ``retry_after`` sets the
        ``retry-after`` header (for ``rate_limit``); ``delay`` is how long ``slow`` waits.
        Rules are checked in the order they were added.
        """
        if kind not in FAILURES:
            raise ValueError(f"unknown failure kind {kind!r}; choose from {', '.join(FAILURES)}")
        with self._lock:
            self._rules.append(_Rule(kind, count, endpoint, prompt_contains,
                                     None if retry_after is None else str(retry_after), delay))

    def clear_failures(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def images_served(self) -> list[bytes]:
        return [r.image for r in self.requests if r.image is not None]

    def _take_rule(self, endpoint: str, prompt: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(endpoint, prompt):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self.requests.append(request)
            return len(self.requests)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        # A client that timed out has closed its socket; writing to it fails. Expected.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server_fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": f"Unknown path {self.path}", "type": "invalid_request_error",
                                        "code": "unknown_url", "param": None}})

    def do_POST(self) -> None:
        fake = self.server_fake
        with fake._lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._answer_post()
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer_post(self) -> None:
        fake = self.server_fake
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest("POST", self.path, headers)
        endpoint = {"/v1/images/generations": "generations", "/v1/images/edits": "edits"}.get(self.path.split("?")[0])
        if endpoint is None:
            fake._record(record)
            return self._error(record, 404, "invalid_request_error", "unknown_url", f"Unknown path {self.path}")
        content_type = headers.get("content-type", "")
        try:
            if content_type.startswith("multipart/form-data"):
                record.form, record.files = _parse_multipart(content_type, body)
            else:
                record.json = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as error:
            fake._record(record)
            return self._error(record, 400, "invalid_request_error", None, f"could not parse the body: {error}")
        number = fake._record(record)
        params = record.fields

        key = (headers.get("authorization") or "").removeprefix("Bearer ").strip()
        if not key:
            return self._error(record, 401, "invalid_request_error", None,
                               "You didn't provide an API key.", outcome="invalid_key")
        if key != fake.api_key:
            return self._failure(record, "invalid_key", key=key, model=params.get("model"))

        prompt = str(params.get("prompt") or "")
        rule = fake._take_rule(endpoint, prompt)
        if rule is not None and rule.kind not in ("slow",):
            return self._failure(record, rule.kind, key=key, model=params.get("model"), retry_after=rule.retry_after)

        model = params.get("model")
        if not model:
            return self._error(record, 400, "invalid_request_error", "missing_required_parameter",
                               "Missing required parameter: 'model'.", outcome="no_model")
        if model in RETIRED_MODELS:
            return self._error(record, 400, "invalid_request_error", "model_not_found",
                               f"The model `{model}` has been deprecated.", outcome="retired_model")
        if not prompt:
            return self._error(record, 400, "invalid_request_error", "missing_required_parameter",
                               "Missing required parameter: 'prompt'.", outcome="no_prompt")
        if endpoint == "edits" and not record.files:
            return self._error(record, 400, "invalid_request_error", "missing_required_parameter",
                               "Missing required parameter: 'image'.", outcome="no_image")

        wait = fake.delay + ((rule.delay if rule.delay is not None else 5.0) if rule is not None else 0.0)
        if wait:
            time.sleep(wait)

        base = None
        if endpoint == "edits":
            base = Image.open(io.BytesIO(record.files[0][3]))
        png = render_png(f"{model}|{prompt}|{number}", fake.image_size, base=base, tag=f"request {number}")
        item: dict[str, Any] = {"b64_json": base64.b64encode(png).decode()}
        if fake.revised_prompts:
            item["revised_prompt"] = f"{prompt} (revised)"
        record.status, record.outcome, record.image = 200, "ok" if rule is None else rule.kind, png
        self._send_json(200, {
            "created": int(time.time()), "background": "opaque", "data": [item], "output_format": "png",
            "quality": params.get("quality") if params.get("quality") in ("low", "medium", "high") else "high",
            "size": "x".join(map(str, fake.image_size)),
            "usage": {"input_tokens": 50, "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                      "output_tokens": 1056, "total_tokens": 1106},
        })

    # -- answers ----------------------------------------------------------------------
    def _failure(self, record: RecordedRequest, kind: str, *, key: str = "", model: Any = None,
                 retry_after: str | None = None) -> None:
        status, err_type, code, message = FAILURES[kind]
        record.outcome = kind
        if kind == "drop":
            record.status = None
            # Close without a byte: the client sees a dropped connection.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if kind in ("garbage", "no_image"):
            record.status = 200
            data = [] if kind == "no_image" else [{"b64_json": base64.b64encode(b"<html>not an image</html>").decode()}]
            return self._send_json(200, {"created": int(time.time()), "data": data})
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        self._error(record, status, err_type, code, message.format(key=key, model=model), outcome=kind,
                    headers=headers)

    def _error(self, record: RecordedRequest, status: int, err_type: str | None, code: str | None, message: str,
               *, outcome: str = "error", headers: dict[str, str] | None = None) -> None:
        record.status = status
        record.outcome = record.outcome or outcome
        self._send_json(status, {"error": {"message": message, "type": err_type, "param": None, "code": code}},
                        headers=headers)

    def _send_json(self, status: int, payload: Any, *, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_fake_{len(self.server_fake.requests)}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            # One request per connection, so nothing pooled outlives a stopped server.
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass                               # the client gave up (timeout): nothing to answer
        self.close_connection = True


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, str, str, bytes]]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    form: dict[str, str] = {}
    files: list[tuple[str, str, str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.append((name, filename, part.get_content_type(), payload))
        else:
            form[name] = payload.decode("utf-8")
    return form, files
