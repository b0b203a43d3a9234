"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API, for tests.

It answers deterministically ("about <first marked span>" for explain prompts, "7" for judge prompts) and
misbehaves on cue: `script` is a queue of actions consumed one per request, `rules` map a substring of the
last user message to an action applied every time it appears. Actions: "ok", "429" (with Retry-After),
"500", "503", "slow" (sleeps `slow_seconds`), "malformed" (a non-JSON body), "nochoices" (JSON without
choices), "empty" (empty content), "401", "404", "echo-key" (a 400 whose message repeats the Authorization
header, like a careless proxy).

Scoring prompts ("Explanation: ...\nExcerpts:\n1. ...") are answered by `judge`: None (the default answer above,
which no score parser accepts), "keyword" (1 for an excerpt containing a word of the explanation, searched in the
<< >> marked words when the excerpts have marks: a perfect judge when the explanation names the feature's word), or
"constant" (1 for every excerpt).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    """Start with `with FakeOpenAI(...) as srv:`; `srv.base_url` is the endpoint, `srv.requests` what came in."""

    def __init__(self, api_key: str = "sk-test", models: tuple[str, ...] = ("test-model",), retry_after: float = 0.05,
                 slow_seconds: float = 2.0):
        self.api_key = api_key
        self.models = set(models)
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.judge: str | None = None
        self.script: deque[str] = deque()
        self.rules: list[tuple[str, str]] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def action_for(self, body: dict) -> str:
        with self.lock:
            if self.script:
                return self.script.popleft()
        last = next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        for needle, action in self.rules:
            if needle in last:
                return action
        return "ok"

    def judge_answer(self, prompt: str) -> str:
        """A 0/1 list for a scoring prompt, by the `judge` rule."""
        explanation = prompt.split("\n", 1)[0][len("Explanation: "):]
        excerpts = re.findall(r"(?m)^\d+\. (.*)$", prompt)
        words = [w.lower() for w in re.findall(r"[A-Za-z]{3,}", explanation)]
        answers = []
        for text in excerpts:
            marked = re.findall(r"<<(.+?)>>", text)
            haystack = " ".join(marked).lower() if "<<" in text else text.lower()
            answers.append(1 if self.judge == "constant" or any(w in haystack for w in words) else 0)
        return "[" + ", ".join(map(str, answers)) + "]"

    def answer_for(self, body: dict) -> str:
        last = next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        if self.judge is not None and last.startswith("Explanation: "):
            return self.judge_answer(last)
        if last.startswith("A: "):
            return "7"
        marked = re.search(r"<<(.+?)>>", last)
        return f"about {marked.group(1)}" if marked else "nothing marked"

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: object, headers: dict | None = None, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _error(self, status: int, message: str, kind: str, headers: dict | None = None) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "code": None}}, headers)

            def do_GET(self) -> None:
                srv.requests.append({"path": self.path, "body": None})
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in sorted(srv.models)]})
                else:
                    self._error(404, "not found", "invalid_request_error")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization", "")
                with srv.lock:
                    srv.requests.append({"path": self.path, "body": body, "time": time.monotonic()})
                if not self.path.endswith("/chat/completions"):
                    return self._error(404, f"unknown path {self.path}", "invalid_request_error")
                action = srv.action_for(body)
                if action == "401" or (srv.api_key and auth != f"Bearer {srv.api_key}"):
                    return self._error(401, "Incorrect API key provided", "invalid_request_error")
                if action == "404" or body.get("model") not in srv.models:
                    return self._error(404, f"The model `{body.get('model')}` does not exist", "invalid_request_error")
                if action == "429":
                    return self._error(429, "Rate limit reached", "requests",
                                       {"Retry-After": f"{srv.retry_after:g}"})
                if action in ("500", "503"):
                    return self._error(int(action), "The server had an error", "server_error")
                if action == "echo-key":
                    return self._error(400, f"bad request with header {auth}", "invalid_request_error")
                if action == "malformed":
                    return self._send(200, None, raw=b"{not json at all")
                if action == "nochoices":
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0,
                                            "model": body.get("model")})
                if action == "slow":
                    time.sleep(srv.slow_seconds)
                content = "" if action == "empty" else srv.answer_for(body)
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                self._send(200, {
                    "id": f"chatcmpl-{len(srv.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                              "total_tokens": prompt_tokens + len(content.split())},
                })

        return Handler
