"""Requests the app refuses before Gradio reads them: other sites' requests and bodies over the upload limit.

Without a login, anything that can make this machine's browser send a request can reach an app bound to
127.0.0.1: a web page the user visits (a form posted across sites, which CORS does not stop) or a name that
a hostile DNS server points at 127.0.0.1 ("DNS rebinding", after which the page reads the answers too). So:
- on loopback, the Host header must name this machine (a rebound name does not);
- a request that can change something (any method but GET, HEAD, OPTIONS) must come from the page's own
  origin, uploads included: a browser sends `Origin` with every such request, and scripts (gradio_client,
  curl) send none;
- a body may be no larger than an upload may be (base64 in JSON, as a `data:` URL, included), and it is
  refused from its length before Gradio decodes a byte of it. Gradio checks its own upload route.
With --auth, wrong logins take turns and each waits `LOGIN_DELAY_S` (`login_check`): guessing a password
then runs at one guess a second, not hundreds.
"""

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UPLOAD_ROUTE = "/gradio_api/upload"  # limited by Gradio itself (launch's max_file_size), streamed to disk
LOGIN_DELAY_S = 1.0


def login_check(user: str, password: str) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's `auth` for one user: the right name and password at once; a wrong one after `LOGIN_DELAY_S`,
    one wrong login at a time (awaited, so the server keeps serving meanwhile)."""
    turns = asyncio.Lock()

    async def check(name: str, given: str) -> bool:
        if hmac.compare_digest(name.encode(), user.encode()) & hmac.compare_digest(given.encode(), password.encode()):
            return True
        async with turns:
            await asyncio.sleep(LOGIN_DELAY_S)
        return False
    return check


def body_limit(max_upload_bytes: int) -> int:
    """The largest request body for a largest upload sent inline: base64 (4 bytes per 3) plus the JSON around it."""
    return max_upload_bytes * 4 // 3 + (64 << 10)


class RequestGuard:
    """ASGI middleware: `hosts` the Host names accepted (None: any, for an app exposed with --auth),
    `max_body` the largest request body in bytes."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None, max_body: int):
        self.app, self.hosts, self.max_body = app, hosts, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.hosts is not None and _hostname(headers.get("host", "")) not in self.hosts:
            await _refuse(scope, receive, send, 403, "refused: the Host header does not name this machine")
            return
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != headers.get("host"):  # uploads too: no site may fill
            await _refuse(scope, receive, send, 403, "refused: a request from another site (Origin is not this page)")
            return                                                                 # the temp folder from afar
        if scope["path"].endswith(UPLOAD_ROUTE):
            await self.app(scope, receive, send)
            return
        if int(headers.get("content-length") or 0) > self.max_body:
            await _refuse(scope, receive, send, 413, f"refused: larger than the upload limit ({self.max_body:,} bytes)")
            return
        body = await _read_body(receive, self.max_body)
        if body is None:
            await _refuse(scope, receive, send, 413, f"refused: larger than the upload limit ({self.max_body:,} bytes)")
            return
        await self.app(scope, _replay(body, receive), send)


def _hostname(host: str) -> str:
    """`127.0.0.1:7860` -> `127.0.0.1`, `[::1]:7860` -> `::1`."""
    return (urlsplit(f"//{host}").hostname or "").lower()


async def _read_body(receive: Receive, limit: int) -> list[Message] | None:
    """The request's body messages, or None once they pass `limit` bytes (a body sent without a length)."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body"):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()
    return replayed


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, text: str) -> None:
    await PlainTextResponse(text, status_code=status)(scope, receive, send)
