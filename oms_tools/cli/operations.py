"""`oms outbox …`, `oms bench …`, `oms fuzz` and `oms token issue`: operating and probing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from oms_platform import auth
from oms_platform.settings import SERVICES, Settings
from oms_platform.tls import TLSConfig
from oms_tools.cli.common import as_json
from oms_tools.cli.orders import caller_token, service_channel
from oms_tools.cli.servicing import parse_duration

# ---- outbox: dead letters ------------------------------------------------------------------


async def cmd_outbox(settings: Settings, args: argparse.Namespace) -> int:
    """`oms outbox dead-letters | redeliver ID | discard ID` (as an admin)."""
    from oms.outbox.v1 import outbox_pb2, outbox_pb2_grpc

    channel = service_channel(settings, args.service, caller_token(settings, auth.ADMIN))
    async with channel:
        stub = outbox_pb2_grpc.OutboxServiceStub(channel)
        if args.outbox_command == "dead-letters":
            listing = await stub.ListDeadLetters(
                outbox_pb2.ListDeadLettersRequest(
                    statuses=[
                        outbox_pb2.DeadLetterStatus.Value(f"DEAD_LETTER_STATUS_{s.upper()}")
                        for s in args.status
                    ],
                    page_size=args.limit,
                ),
                timeout=10,
            )
            if args.json:
                print(as_json(listing))
            for letter in [] if args.json else listing.dead_letters:
                _print_dead_letter(letter)
            return 0
        if args.outbox_command == "redeliver":
            response: Any = await stub.RedeliverDeadLetter(
                outbox_pb2.RedeliverDeadLetterRequest(
                    dead_letter_id=args.dead_letter_id, note=args.note
                ),
                timeout=10,
            )
        else:
            response = await stub.DiscardDeadLetter(
                outbox_pb2.DiscardDeadLetterRequest(
                    dead_letter_id=args.dead_letter_id, note=args.note
                ),
                timeout=10,
            )
    if args.json:
        print(as_json(response))
    else:
        _print_dead_letter(response.dead_letter)
    return 0


def _print_dead_letter(letter: Any) -> None:
    from oms.outbox.v1 import outbox_pb2

    status = outbox_pb2.DeadLetterStatus.Name(letter.status).removeprefix("DEAD_LETTER_STATUS_")
    print(
        f"{letter.dead_letter_id}  {letter.service}  {letter.kind} {letter.name} -> "
        f"{letter.workflow_id}  [{status.lower()}]  "
        f"{letter.dead_lettered_at.ToDatetime():%Y-%m-%d %H:%M}"
    )
    print(f"  {letter.error_kind} after {letter.attempts} attempts: {letter.error}")
    print(f"  payload {letter.payload_bytes} bytes; {letter.waiting} rows waiting behind it")
    if letter.settled_by:
        print(
            f"  {status.lower()} by {letter.settled_by}"
            + (f": {letter.note}" if letter.note else "")
        )


# ---- benchmarks ----------------------------------------------------------------------------


async def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.bench import command as bench

    return await bench.run(args)


# ---- the protocol fuzzer ------------------------------------------------------------------


def _dev_tokens(settings: Settings, locations: list[str]) -> Callable[[str], str]:
    """A token per role from the dev stack's keys: external roles from its issuer (storefronts
    on every channel, warehouses at `locations`), internal ones from its internal secret."""
    sources = {
        role: auth.dev_persona(
            settings,
            "oms-fuzz" if role in auth.INTERNAL_ROLES else f"oms-fuzz-{role}",
            role,
            locations=locations if role == auth.WAREHOUSE else (),
        )
        for role in sorted(auth.ROLES)
    }
    return lambda role: sources[role]()


async def cmd_fuzz(settings: Settings, args: argparse.Namespace) -> int:
    """`oms fuzz`: hostile requests at every RPC of a running dev stack."""
    try:
        from oms_tools import fuzz
    except ImportError as missing:  # hypothesis is a development dependency
        print(f"oms fuzz needs the dev extras ({missing}): pip install -e '.[dev]'")
        return 2
    selected = fuzz.rpcs(args.service or None)
    addresses = {name: settings.address_of(name) for name in SERVICES}
    tls = TLSConfig.from_settings(settings)

    def say(text: str) -> None:
        if not args.json:  # --json prints the report alone
            print(text, flush=True)

    target = fuzz.Target(addresses, _dev_tokens(settings, []), tls=tls)
    try:
        if args.seed_orders:
            say(f"submitting {args.seed_orders} sample orders to fuzz with their ids")
            cards = ["tok_decline" if i == 2 else "tok_visa" for i in range(args.seed_orders)]
            ids = await fuzz.submit_samples(target, cards)
            await fuzz.wait_for(target, ids, fuzz.invoiced, args.seed_wait)
        known = await fuzz.harvest(target)
    finally:
        await target.close()
    # The warehouse plays every location found, so its calls get past the location check.
    target = fuzz.Target(addresses, _dev_tokens(settings, known.of("location_id")), tls=tls)
    say(
        f"fuzzing {len(selected)} RPCs for {args.minutes} min (seed {args.seed}) with "
        f"{len(known.every())} real ids; the stack's data gets hostile records"
    )
    try:
        report = await fuzz.run(
            target,
            known,
            selected,
            seed_value=args.seed,
            examples=args.examples,
            minutes=args.minutes,
            progress=say,
        )
    finally:
        await target.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.summary() + report.failure_lines()))
    return 1 if report.failures else 0


async def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    """`oms token issue`: a development token from the dev stack's signing key."""
    channels = tuple(args.channel or (["web"] if args.role == auth.STOREFRONT else []))
    token = auth.TokenIssuer.from_settings(settings).issue(
        args.subject or f"{args.role}@dev",
        [args.role],
        locations=args.location,
        channels=channels,
        ttl_seconds=parse_duration(args.ttl).total_seconds(),
    )
    print(token)
    return 0
