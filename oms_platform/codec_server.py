"""The codec server (`oms codec-server`): lets authorized people read sealed payloads in the
Temporal UI and the `temporal` CLI, which call its `/encode` and `/decode` endpoints with
`{"payloads": [...]}` in protobuf JSON.

Every request is authenticated (a bearer token of a principal with the `admin` role). It reads
every data key from the database (no cache), so a payload of a shredded order stops decoding
the moment `KeyVault.shred` returns; such payloads come back still sealed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import structlog
from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from oms_platform import temporal
from oms_platform.codec import CodecError, EncryptionCodec, Shredded
from oms_platform.settings import Settings

log = structlog.get_logger("oms.codec_server")

ADMIN = "admin"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
MAX_BODY_BYTES = 16 * 1024 * 1024  # a page of history's payloads, with room to spare


# ---- authentication: a stand-in for oms_platform.auth.Authenticator ------------------------
# Until the shared authenticator lands, development tokens are HS256 JWTs signed with a secret
# kept beside the codec keys. `authenticator()` and `mint_admin_token()` are the two places
# that change when it does; the server only needs "token -> principal with roles".


class Unauthenticated(Exception):
    """The request carries no valid token."""


@dataclass(frozen=True)
class Principal:
    """Who is calling and with which roles."""

    subject: str
    roles: frozenset[str]


Authenticate = Callable[[str], Principal | Awaitable[Principal]]

TOKEN_ISSUER = "oms-dev"
TOKEN_AUDIENCE = "oms"


def _secret_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "keys" / "dev-token.secret"


def ensure_token_secret(settings: Settings) -> None:
    """Create the development token secret unless it exists (`oms dev`)."""
    path = _secret_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(os.urandom(32).hex())


def mint_admin_token(
    settings: Settings, subject: str = "oms-dev-ui", ttl: float = 30 * 86400
) -> str:
    """A development token of an admin (the dev server's UI decodes with it)."""
    return mint_token(settings, subject, [ADMIN], ttl)


def mint_token(settings: Settings, subject: str, roles: list[str], ttl: float = 3600) -> str:
    """A development token for `subject` with `roles`."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": roles,
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + int(ttl),
    }
    return jwt.encode(claims, _secret_path(settings).read_text().strip(), algorithm="HS256")


def authenticator(settings: Settings) -> Authenticate:
    """Verifies a bearer token into a Principal, or raises Unauthenticated with the reason."""
    secret = _secret_path(settings).read_text().strip()

    def authenticate(token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, secret, algorithms=["HS256"], audience=TOKEN_AUDIENCE, issuer=TOKEN_ISSUER
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated(str(error)) from None
        return Principal(str(claims.get("sub", "")), frozenset(claims.get("roles", [])))

    return authenticate


# ---- the server ----------------------------------------------------------------------------


def _cors(origins: Iterable[str]) -> Any:
    allowed = set(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if request.method == "OPTIONS":
            # Browsers send the preflight without credentials: answer it without checking any.
            response: web.StreamResponse = web.Response(status=204)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as error:
                response = error
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Vary"] = "Origin"
        return response

    return middleware


def build_app(
    codec: EncryptionCodec, authenticate: Authenticate, origins: Iterable[str]
) -> web.Application:
    """The codec server's HTTP application."""

    async def principal_of(request: web.Request) -> Principal:
        # The dev server's UI has no login and so sends no Authorization header; `oms dev`
        # gives it an endpoint with a token in the path (/t/<token>/decode) instead. Anyone who
        # can read the dev server's settings can read that token: fine for one machine, which
        # is why real deployments configure the UI to pass its users' own bearer tokens.
        token = request.match_info.get("token", "")
        if not token:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise web.HTTPUnauthorized(
                    text="a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
                )
        try:
            principal = authenticate(token.strip())
            if inspect.isawaitable(principal):
                principal = await principal
        except Unauthenticated as error:
            raise web.HTTPUnauthorized(
                text=f"invalid token: {error}", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        assert isinstance(principal, Principal)
        if ADMIN not in principal.roles:
            raise web.HTTPForbidden(text="decoding payloads needs the admin role")
        return principal

    async def payloads_of(request: web.Request) -> Payloads:
        try:
            return json_format.Parse(await request.text(), Payloads(), ignore_unknown_fields=True)
        except json_format.ParseError as error:
            raise web.HTTPBadRequest(text=f'expected {{"payloads": [...]}}: {error}') from None

    def answer(payloads: Payloads) -> web.Response:
        body = json_format.MessageToJson(payloads)
        return web.Response(text=body, content_type="application/json")

    async def decode(request: web.Request) -> web.Response:
        principal = await principal_of(request)
        payloads = await payloads_of(request)
        out = Payloads()
        shredded = 0
        for payload in payloads.payloads:
            try:
                out.payloads.append(await codec.decode_one(payload))
            except Shredded:
                # Erased for good: hand it back sealed, so the rest of the page still reads.
                shredded += 1
                out.payloads.append(payload)
            except CodecError as error:
                raise web.HTTPUnprocessableEntity(text=str(error)) from None
        log.info(
            "payloads decoded",
            principal=principal.subject,
            payloads=len(payloads.payloads),
            shredded=shredded,
            namespace=request.headers.get("X-Namespace", ""),
        )
        return answer(out)

    async def encode(request: web.Request) -> web.Response:
        principal = await principal_of(request)
        payloads = await payloads_of(request)
        sealed = await codec.encode(list(payloads.payloads))
        log.info("payloads encoded", principal=principal.subject, payloads=len(sealed))
        return answer(Payloads(payloads=sealed))

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204)  # the CORS middleware answers it

    app = web.Application(middlewares=[_cors(origins)], client_max_size=MAX_BODY_BYTES)
    for prefix in ("", "/t/{token}"):
        app.router.add_post(f"{prefix}/decode", decode)
        app.router.add_post(f"{prefix}/encode", encode)
        app.router.add_route("OPTIONS", f"{prefix}/decode", preflight)
        app.router.add_route("OPTIONS", f"{prefix}/encode", preflight)
    return app


async def start(settings: Settings, port: int | None = None) -> tuple[web.AppRunner, int]:
    """Start the codec server; returns its runner and bound port (0 picks a free one)."""
    codec = await temporal.open_codec(settings, cache=False)
    app = build_app(codec, authenticator(settings), settings.codec_server_origins)

    async def close_vault(_app: web.Application) -> None:
        if codec.vault is not None:
            await codec.vault.close()

    app.on_cleanup.append(close_vault)
    # No access log: a path can carry the UI's token.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    bind = settings.codec_server_port if port is None else port
    site = web.TCPSite(runner, settings.host, bind)
    await site.start()
    bound = int(runner.addresses[0][1])
    log.info("codec server started", port=bound, origins=settings.codec_server_origins)
    return runner, bound


async def serve_forever(settings: Settings) -> None:
    """`oms codec-server`: run until SIGINT or SIGTERM."""
    runner, _ = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def endpoint(settings: Settings, token: str = "") -> str:
    """The codec server's URL (with a token in the path for a client that sends none)."""
    base = f"http://{settings.host}:{settings.codec_server_port}"
    return f"{base}/t/{token}" if token else base
