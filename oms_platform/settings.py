"""Settings, read once from environment variables prefixed `OMS_`.

Every port, address, data directory and duration is a setting with a default that suits
`make dev`; tests and demos shrink durations through the same variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PREFIX = "OMS_"
ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> str:
    return str(ROOT / ".oms")


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration; `Settings.from_env()` builds it."""

    # Where embedded Postgres and Temporal keep their data between runs.
    data_dir: str = field(default_factory=_default_data_dir)
    # External Postgres (a DSN); empty means the embedded one started by `oms dev`.
    database_url: str = ""
    # Every default port of the stack sits below Linux's ephemeral range (32768-60999): a
    # client retrying a port of that range while nothing listens can be handed that very port
    # as its own source and connect to itself, holding it so the server cannot come back.
    embedded_postgres_port: int = 15432
    db_pool_min: int = 2
    db_pool_max: int = 10
    # External Temporal frontend (host:port); empty means the embedded dev server.
    temporal_address: str = ""
    temporal_namespace: str = "default"
    embedded_temporal_port: int = 7233
    embedded_temporal_ui_port: int = 8233
    task_queue: str = "oms-orders"
    # Where each service listens and where the others find it. An address may list several
    # `ip:port`s, comma-separated: the replicas of a service, called round robin.
    host: str = "127.0.0.1"
    capture_port: int = 15051
    fulfillment_port: int = 15052
    payments_port: int = 15053
    servicing_port: int = 15054
    capture_address: str = ""
    fulfillment_address: str = ""
    payments_address: str = ""
    servicing_address: str = ""
    # Transport security (README "Encrypted transport"). A server certificate and key turn TLS
    # on for every gRPC server; a CA bundle turns it on for every client, which verifies
    # servers with it (servers verify client certificates with the same bundle). Paths to PEM
    # files; empty means plaintext.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # The certificate an oms process (or the CLI) presents to the servers it calls.
    tls_client_cert: str = ""
    tls_client_key: str = ""
    # Servers refuse callers without a client certificate signed by `tls_ca` (mutual TLS).
    tls_require_client_cert: bool = False
    # Temporal: TLS on (also implied by any temporal_tls_* path and by an API key), a CA to
    # verify the frontend with (empty: the system roots), a client certificate for mTLS, the
    # name the frontend's certificate carries if not the host dialled, and Temporal Cloud's
    # API key (the other way in).
    temporal_tls: bool = False
    temporal_tls_ca: str = ""
    temporal_tls_cert: str = ""
    temporal_tls_key: str = ""
    temporal_tls_server_name: str = ""
    temporal_api_key: str = ""
    # `oms dev --tls`: generate a local CA and certificates into <data_dir>/tls and run the
    # whole dev stack encrypted (gRPC with mutual TLS, Postgres TLS only, Temporal behind a
    # TLS proxy).
    dev_tls: bool = False
    # `oms dev --replicas N`: N replicas of every service and N workers, one Postgres and one
    # Temporal. Replica k (from 1) of a service listens on its port + 100 * (k - 1); every
    # client is given all the replicas' addresses.
    dev_replicas: int = 1
    # The dev stack loads every US ZIP's coordinates on its first start (distance routing; see
    # README "Where an order ships from"). The tests' and benches' stacks leave it out: they
    # route with the seeded prefixes and start sooner.
    dev_load_postal_codes: bool = True
    # The warehouse-and-carrier simulator of the dev stack.
    simulator: bool = True
    simulator_step_seconds: float = 1.0
    simulator_poll_seconds: float = 0.5
    # Payments: how long an authorization holds, and the simulated gateway's behaviour.
    authorization_hold_hours: int = 168
    # An order waiting on a backorder or pre-order keeps its holds until the promised day's end
    # plus this margin: a hold that would lapse sooner is renewed this long before it lapses.
    authorization_renewal_margin_hours: int = 48
    authorization_renewal_lead_seconds: int = 43_200
    # The simulated gateways report how long a hold lasts (a processor's own capture window);
    # 0: they say nothing and a hold lasts authorization_hold_hours.
    gateway_hold_seconds: int = 0
    gateway_latency_ms: int = 0
    # Authorizations above this amount (minor units) are declined; 0 means no limit.
    gateway_decline_above_minor: int = 0
    # Share of gateway calls that fail transiently (0.0 to 1.0), for chaos runs.
    gateway_transient_failure_rate: float = 0.0
    # payments
    # Which gateway adapter each payment method type talks to, by adapter name
    # ("simulated": cards and terms; "simulated-giftcard": balances per token gc_<minor units>).
    gateway_for_card: str = "simulated"
    gateway_for_gift_card: str = "simulated-giftcard"
    gateway_for_invoice_terms: str = "simulated"
    # The simulated gateways append every operation they perform to this JSON-lines file (so
    # tests can check what happened at the "processor"); empty: nowhere.
    gateway_log_path: str = ""
    # Where the simulated gateways keep their books: "postgres" (schema `simgateway` of the
    # database, as a processor of its own that outlives payments restarts) or "memory".
    gateway_simulator_storage: str = "postgres"
    # GetOrder answers within this deadline even if a service is slow.
    get_order_deadline_seconds: float = 2.0
    # Outbox relays: rows per batch and idle poll interval; a relay starts a pass at most every
    # `outbox_pass_interval_seconds` (under load every commit wakes it: one pass per interval
    # takes the rows of many commits in one transaction). A quiet relay starts its pass as soon
    # as it is woken; under load a row waits at most the interval.
    outbox_batch_size: int = 200
    outbox_poll_seconds: float = 0.5
    outbox_pass_interval_seconds: float = 0.1
    # Times Temporal may refuse an outbox row for good (invalid argument, payload too large,
    # unencodable) before it moves to the dead letters and a process exception is raised.
    # Outages never count.
    outbox_dead_letter_after: int = 5
    # fulfillment
    # Most fulfillment orders (locations) routing splits one delivery group into; 1 means
    # one location ships the group or the rest is reported unallocated.
    routing_max_splits: int = 5
    # How often fulfillment releases checkout reservations past their expiry (readers leave
    # expired holds out before that; this gives their units back to the levels).
    reservation_sweep_seconds: float = 5.0
    # Store pickup: how long a fulfillment order waits at its store once ready for pickup (7
    # days), and how often fulfillment cancels the ones not collected by then.
    pickup_collect_within_seconds: float = 604800.0
    pickup_sweep_seconds: float = 30.0
    # Share (0.0 to 1.0) of allocated fulfillment orders the dev simulator rejects instead of
    # accepting, to exercise rerouting; decided per fulfillment order, the same on every run.
    simulator_reject_rate: float = 0.0
    # Identity. Callers' bearer tokens must be issued by `auth_issuer` for `auth_audience`
    # and signed by a key of `auth_jwks` (a JWKS file path or an https URL; empty: the dev
    # stack's `<data_dir>/keys/jwks.json`). HS256 tokens are accepted only when a secret file is
    # set (development). oms processes sign their service tokens with the secret in
    # `internal_secret_file` (empty: `<data_dir>/keys/internal.secret`); `auth_signing_key_file`
    # is the dev issuer's private key `oms token issue` and the CLI sign with.
    auth_issuer: str = "oms-dev"
    auth_audience: str = "oms"
    auth_jwks: str = ""
    auth_hs256_secret_file: str = ""
    auth_signing_key_file: str = ""
    internal_secret_file: str = ""
    auth_leeway_seconds: float = 30.0
    # gRPC server reflection (grpcurl `list`/`describe`); switch off where the API is private.
    grpc_reflection: bool = True
    # gRPC server limits per process: calls served at once (more wait in line at the
    # transport), keepalive pings (a dead peer's connection is dropped), and the age after
    # which a connection is closed gracefully so clients rebalance across replicas.
    grpc_max_concurrent_rpcs: int = 1000
    grpc_keepalive_seconds: float = 60.0
    grpc_keepalive_timeout_seconds: float = 20.0
    grpc_max_connection_age_seconds: float = 1800.0
    grpc_max_connection_age_grace_seconds: float = 30.0
    # WatchOrder: open streams per capture process (RESOURCE_EXHAUSTED past it) and how long
    # one stream lasts before it ends normally (the caller watches again to go on).
    watch_max_streams: int = 2000
    watch_max_seconds: float = 3600.0
    # The event log's sequencer (README "Events"): woken by NOTIFY when events are written,
    # and every `events_sequencer_poll_seconds` anyway (SubmitOrder does not NOTIFY; another
    # replica's writes are found by the poll); events numbered per pass.
    events_sequencer_poll_seconds: float = 0.25
    events_sequencer_batch_size: int = 1000
    # The log's consumers in a capture process (the sequencer, the webhook fan-out, the
    # notification consumer and sender) start a pass at most this often: under load every
    # commit wakes them, and a pass per wake-up costs a transaction for a few rows. A quiet
    # consumer starts its pass as soon as it is woken; under load an event waits at most the
    # interval at each of them.
    events_pass_interval_seconds: float = 0.25
    # A warehouse step of a fulfillment order whose allocation the log has not recorded yet
    # waits for it (parked) at most this long, then is logged anyway (an allocation that never
    # names its fulfillment order: a lifecycle from before typed events).
    events_park_max_seconds: float = 60.0
    # SubscribeEvents: events read per page of history, a heartbeat (carrying the head) after
    # this long with nothing sent, open streams per capture process (RESOURCE_EXHAUSTED past
    # it), and how long one stream lasts before it ends normally (resume from the last
    # sequence seen + 1).
    events_stream_page_size: int = 500
    events_stream_heartbeat_seconds: float = 15.0
    events_stream_max_streams: int = 500
    events_stream_max_seconds: float = 3600.0
    # Logging: "auto" (pretty on a terminal, JSON otherwise), "json" or "console".
    log_format: str = "auto"
    log_level: str = "info"
    # The event loop every oms process runs on: "uvloop" (libuv's loop, the default: sockets,
    # timers and cross-thread wake-ups in C, which the services, Postgres driver and worker
    # spend much of their time in) or "asyncio" (the standard library's).
    event_loop: str = "uvloop"
    # `oms dev` and the benches: how much lower (nice) than capture and Postgres the stack runs
    # Temporal, the worker, the simulator and the other services; 0 runs them all alike.
    stack_background_niceness: int = 10
    # `oms dev` restarts any process of the stack that exits (Postgres and Temporal included)
    # after a delay that starts here and doubles while it keeps dying quickly, up to the max.
    stack_restart_delay_seconds: float = 0.5
    stack_restart_max_seconds: float = 30.0
    # Graceful shutdown (SIGTERM/SIGINT). A service first answers NOT_SERVING on its health
    # checks for `shutdown_not_serving_seconds` while still serving (so a load balancer stops
    # sending it calls), then stops accepting calls and lets in-flight ones finish for up to
    # `shutdown_grace_seconds`; the worker gives its running activities as long to finish.
    shutdown_not_serving_seconds: float = 1.0
    shutdown_grace_seconds: float = 10.0
    # The worker's sticky cache: workflows kept in memory between their tasks (the SDK's
    # default); one evicted is replayed from its history on its next task. Memory for speed
    # (`oms bench memory` reports both ends).
    worker_max_cached_workflows: int = 1000
    # The garbage collector of every long-running oms process (oms_platform/heap.py): once
    # started, what the process holds is frozen out of the collector's walks, and young
    # collections run every this many container allocations (CPython's default: 700).
    # 0 leaves the collector as CPython sets it.
    gc_young_threshold: int = 10_000
    # Run workflows inside the SDK's sandbox (off: the tests and history replay run the
    # lifecycle sandboxed; see workflows.worker.workflow_runner).
    worker_sandbox: bool = False
    # lifecycle: durations the order workflow waits (written into each order at capture).
    # An order whose payment cannot be authorized within this time is canceled.
    authorization_timeout_seconds: int = 3600
    # An unresolved process exception escalates after this long.
    escalate_after_seconds: int = 4 * 3600
    # Returns are accepted this long after delivery; per channel "web=30,store=14" overrides.
    return_window_days: float = 30.0
    return_window_days_by_channel: str = ""
    # A delivered order's workflow continues as new (a fresh history, its state carried) once
    # its history reaches this many events.
    lifecycle_continue_as_new_after_events: int = 10_000
    # Dunning (README "Subscriptions"): a subscription's cycle order whose payment is declined
    # waits past due and is retried this many seconds after the first decline, once per entry
    # (comma-separated, increasing; default 1, 3 and 7 days); after the last the order is
    # canceled. Written into each subscription order at capture; other orders never wait.
    subscription_dunning_retry_seconds: str = "86400,259200,604800"
    # capture
    # Fraud screening at capture flags an order for a person to look at when its grand total
    # is above this amount (minor units of the order's currency; 0 = off), when its shopper
    # has placed this many orders within the hour before it (0 = off), or when its billing
    # country differs from a shipping country.
    fraud_amount_threshold_minor: int = 0
    fraud_max_orders_per_shopper_per_hour: int = 0
    fraud_flag_country_mismatch: bool = True
    # While SubmitOrder is busy and its 95th percentile latency (in the capture process) is
    # above this, lifecycle starts are paced so processing yields the machine to the front
    # door (0 = never pace); paced starts never drop below the floor per second.
    ingest_latency_target_ms: float = 15.0
    lifecycle_starts_floor_per_second: float = 0.5
    # Webhooks (README "Webhooks"). The sender POSTs at most `webhook_max_concurrency`
    # deliveries at once per capture process (one at a time per order and subscription), each
    # given `webhook_timeout_seconds`; a failed one is tried again after
    # `webhook_retry_first_seconds`, doubling (jittered) up to `webhook_retry_max_seconds`, until
    # it has failed for `webhook_retry_period_seconds` and is dead. The fan-out and the sender
    # look for work this often when nothing woke them; the fan-out reads this many events a pass.
    webhook_max_concurrency: int = 16
    webhook_timeout_seconds: float = 10.0
    webhook_retry_first_seconds: float = 5.0
    webhook_retry_max_seconds: float = 3600.0
    webhook_retry_period_seconds: float = 24 * 3600.0
    webhook_poll_seconds: float = 1.0
    webhook_fanout_batch_size: int = 500
    # Temporal payload encryption (oms_platform/codec.py). A file of `<key_id>:<base64 of 32
    # bytes>` lines: the first is the active master key, the others still decrypt (rotation).
    # Empty means `<data_dir>/keys/codec.keys`, which `oms dev` creates on first start.
    codec_keys_file: str = ""
    # Unwrapped per-order data keys each process keeps in memory (no database round trip per
    # payload); a shred evicts them everywhere at once (NOTIFY).
    codec_data_key_cache_size: int = 10_000
    # The codec server (`oms codec-server`) the Temporal UI and CLI decode payloads through, and
    # the browser origins allowed to call it (comma-separated; empty: the dev server's UI).
    codec_server_port: int = 8234
    codec_server_cors_origins: str = ""
    # Prometheus metrics (oms_platform/metrics.py): every service process and the worker serve
    # /metrics on metrics_host:metrics_port (0 = off; the deploy files use 9464 on 0.0.0.0).
    # Gauges only the database knows (outbox lag, exceptions open) are read this often.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_refresh_seconds: float = 5.0
    # `oms dev`: capture, fulfillment, payments, servicing and the worker serve metrics on this
    # port + 0 … 4 (replica k: + 100 * (k - 1)); 0 = no metrics in the dev stack.
    dev_metrics_port: int = 15090
    # Shopper notifications (README "Shopper notifications"), sent by capture. Mail goes
    # through this SMTP server: by default the dev stack's sink (`oms dev` runs it on this port
    # and keeps what arrives in <data_dir>/mail). smtp_tls: "none", "starttls" or "tls"; an
    # empty username: no login.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 15025
    smtp_tls: str = "none"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_timeout_seconds: float = 10.0
    notify_from: str = "oms <orders@oms.localhost>"
    # The language of a shopper's messages when they chose none ("en" and "de" ship).
    notify_default_locale: str = "en"
    # A message that could not be sent is retried after notify_retry_first_seconds, doubling up
    # to notify_retry_max_seconds, until notify_retry_period_seconds after it was made; then
    # it is FAILED. A sender holds a message it took for notify_lease_seconds: if its process
    # dies meanwhile, another replica sends it.
    notify_retry_first_seconds: float = 5.0
    notify_retry_max_seconds: float = 300.0
    notify_retry_period_seconds: float = 86400.0
    notify_lease_seconds: float = 60.0
    # How often the notifier looks for work when nothing woke it, and how many events or
    # messages it takes per pass.
    notify_poll_seconds: float = 2.0
    notify_batch_size: int = 100
    # `oms dev` runs a mail sink on smtp_host:smtp_port (off: smtp_* name a real server).
    dev_mail_sink: bool = True
    # servicing
    # Exchanges ship their replacements once the returned items are received ("on receipt"),
    # instead of as soon as the return is opened.
    exchange_ships_on_receipt: bool = False
    # How long servicing waits for an order's workflow to answer a change or a resolution
    # (a Temporal Update); past it the caller gets UNAVAILABLE and retries with the same key.
    servicing_update_timeout_seconds: float = 30.0
    # The workflow records a process exception a moment before it waits on it: a resolution
    # refused for an exception younger than this is offered again until it is this old.
    servicing_resolution_grace_seconds: float = 2.0
    # Subscriptions (README "Subscriptions"). Cycles due at the same moment start within this
    # many seconds after it, each subscription at an offset of its own (deterministic from its
    # id), so the 1st of the month reaches the front door as a trickle, not a burst.
    subscription_spread_seconds: int = 4 * 3600
    # Plans may have a cadence in minutes (1 to 1,440): for demos and tests only (`oms dev` and
    # the test suites turn it on); off, CreatePlan refuses them.
    subscription_minute_cadence: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `OMS_<FIELD>` variables, then apply `overrides`."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind = type(getattr(cls(), f.name))
            if kind is bool:
                values[f.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            else:
                values[f.name] = kind(raw)
        values.update(overrides)
        return cls(**values)

    def return_window_seconds(self, channel: str) -> int:
        """How long after delivery `channel`'s orders accept returns."""
        for part in self.return_window_days_by_channel.split(","):
            name, _, days = part.partition("=")
            if name.strip() == channel and days.strip():
                return int(float(days) * 86400)
        return int(self.return_window_days * 86400)

    @property
    def dunning_retry_seconds(self) -> list[int]:
        """The dunning schedule: seconds after the first decline of each payment retry."""
        raw = self.subscription_dunning_retry_seconds
        try:
            offsets = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            offsets = []
        if not offsets or any(o <= 0 for o in offsets) or offsets != sorted(set(offsets)):
            raise ValueError(
                f"OMS_SUBSCRIPTION_DUNNING_RETRY_SECONDS must be positive whole seconds, "
                f"increasing and comma-separated (e.g. 86400,259200,604800), not {raw!r}"
            )
        return offsets

    def address_of(self, service: str) -> str:
        """host:port where `service` (capture, fulfillment, payments, servicing) is reached;
        several, comma-separated, when it runs replicas."""
        explicit = getattr(self, f"{service}_address")
        if explicit:
            return str(explicit)
        return f"{self.host}:{self.port_of(service)}"

    def port_of(self, service: str) -> int:
        """The port `service` listens on."""
        return int(getattr(self, f"{service}_port"))

    @property
    def temporal_target(self) -> str:
        """host:port of the Temporal frontend."""
        return self.temporal_address or f"127.0.0.1:{self.embedded_temporal_port}"

    @property
    def keys_dir(self) -> Path:
        """Where the dev stack keeps its keys (signing key, JWKS, internal secret)."""
        return Path(self.data_dir) / "keys"

    @property
    def auth_jwks_source(self) -> str:
        """The JWKS callers' tokens are verified with."""
        return self.auth_jwks or str(self.keys_dir / "jwks.json")

    @property
    def auth_signing_key_path(self) -> str:
        """The dev issuer's private key (`oms token issue`)."""
        return self.auth_signing_key_file or str(self.keys_dir / "issuer.pem")

    @property
    def internal_secret_path(self) -> str:
        """The secret oms processes sign their service tokens with."""
        return self.internal_secret_file or str(self.keys_dir / "internal.secret")

    @property
    def dsn(self) -> str:
        """The Postgres DSN services connect with."""
        if self.database_url:
            return self.database_url
        return f"postgresql://postgres@127.0.0.1:{self.embedded_postgres_port}/oms"

    @property
    def codec_keys_path(self) -> Path:
        """The master keys file of the payload codec."""
        return Path(self.codec_keys_file or self.keys_dir / "codec.keys")

    @property
    def codec_server_origins(self) -> list[str]:
        """Browser origins allowed to call the codec server."""
        if self.codec_server_cors_origins.strip():
            return [o.strip() for o in self.codec_server_cors_origins.split(",") if o.strip()]
        port = self.embedded_temporal_ui_port
        return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]

    def as_env(self) -> dict[str, str]:
        """These settings as `OMS_*` variables, for child processes."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[PREFIX + f.name.upper()] = (
                ("1" if value else "0") if isinstance(value, bool) else str(value)
            )
        return out


SERVICES = ("capture", "fulfillment", "payments", "servicing")
