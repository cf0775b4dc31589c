"""The codec server (`oms codec-server`): lets authorized people read sealed payloads in the
Temporal UI and the `temporal` CLI, which call its `/encode` and `/decode` endpoints with
`{"payloads": [...]}` in protobuf JSON.

Every request is authenticated (a bearer token of a principal with the `admin` role). It reads
every data key from the database (no cache), so a payload of a shredded order stops decoding
the moment `KeyVault.shred` returns; such payloads come back still sealed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from oms_platform import temporal
from oms_platform.auth import ADMIN, Authenticator, Principal, TokenIssuer, Unauthenticated
from oms_platform.codec import CodecError, EncryptionCodec, Shredded
from oms_platform.settings import Settings

log = structlog.get_logger("oms.codec_server")

ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
MAX_BODY_BYTES = 16 * 1024 * 1024  # a page of history's payloads, with room to spare


# ---- authentication -------------------------------------------------------------------------

Authenticate = Callable[[str], Principal]


def mint_admin_token(
    settings: Settings, subject: str = "oms-dev-ui", ttl: float = 30 * 86400
) -> str:
    """A token of the dev issuer for an admin (`oms dev` gives it to the dev server's UI)."""
    return TokenIssuer.from_settings(settings).issue(subject, [ADMIN], ttl_seconds=ttl)


# ---- the server ----------------------------------------------------------------------------


def _cors(origins: Iterable[str]) -> Any:
    allowed = set(origins)

    def allow(headers: Any, origin: str) -> None:
        if origin in allowed:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
            headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            headers["Vary"] = "Origin"

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
                # Refusals too, so the UI's page can read why (401, 403).
                allow(error.headers, origin)
                raise
        allow(response.headers, origin)
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
            # Off the event loop: verifying may fetch a JWKS over the network.
            principal = await asyncio.to_thread(authenticate, token.strip())
        except Unauthenticated as error:
            raise web.HTTPUnauthorized(
                text=f"invalid token: {error.reason}", headers={"WWW-Authenticate": "Bearer"}
            ) from None
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
    verifier = Authenticator.from_settings(settings)
    app = build_app(codec, verifier.authenticate, settings.codec_server_origins)

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
