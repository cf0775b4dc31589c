"""Temporal client connection, shared by services, the worker, the CLI, benches and tests.

Every client seals payloads with the oms codec (oms_platform/codec.py), so it needs the master
keys file and the database holding the per-order data keys (`OMS_DATABASE_URL`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from oms_platform import tracing
from oms_platform.codec import EncryptionCodec, KeyVault, MasterKeys, data_converter
from oms_platform.listen import Listener
from oms_platform.settings import Settings


def tls_config(settings: Settings) -> TLSConfig | None:
    """TLS towards the Temporal frontend, or None (the SDK then turns TLS on for an API key)."""
    paths = (settings.temporal_tls_ca, settings.temporal_tls_cert, settings.temporal_tls_key)
    if not (settings.temporal_tls or any(paths)):
        return None
    if bool(settings.temporal_tls_cert) != bool(settings.temporal_tls_key):
        raise ValueError("OMS_TEMPORAL_TLS_CERT and OMS_TEMPORAL_TLS_KEY are set together")

    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca),
        client_cert=read(settings.temporal_tls_cert),
        client_private_key=read(settings.temporal_tls_key),
        domain=settings.temporal_tls_server_name or None,
    )


async def open_codec(
    settings: Settings, *, cache: bool = True, listener: Listener | None = None
) -> EncryptionCodec:
    """The payload codec of these settings: their master keys and a vault on their database
    (`cache=False` reads every data key from the database, as the codec server does); a
    caching vault hears of shreds on `listener`, the process's LISTEN connection, if given."""
    keys = MasterKeys.load(settings.codec_keys_path)
    size = settings.codec_data_key_cache_size if cache else 0
    vault = await KeyVault.open(settings.dsn, keys, cache_size=size, listener=listener)
    return EncryptionCodec(keys, vault)


async def connect(
    settings: Settings, codec: EncryptionCodec | None = None, runtime: Runtime | None = None
) -> Client:
    """Connect to the configured Temporal frontend and namespace, sealing payloads with `codec`
    (by default one opened from `settings`, closed by `close`), on `runtime` if given (the
    worker's exports the SDK's metrics)."""
    owned = codec is None
    codec = codec or await open_codec(settings)
    try:
        return await Client.connect(
            settings.temporal_target,
            namespace=settings.temporal_namespace,
            tls=tls_config(settings),
            api_key=settings.temporal_api_key or None,
            data_converter=data_converter(codec),
            runtime=runtime,
            # Spans for starts, runs, activities, signals and updates when tracing is on; a
            # worker built on this client takes them too.
            interceptors=tracing.temporal_interceptors(),
        )
    except BaseException:
        if owned and codec.vault is not None:
            await codec.vault.close()
        raise


def codec_of(client: Client) -> EncryptionCodec:
    """The codec a client made by `connect` seals with."""
    codec = client.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec), "a client not made by oms_platform.temporal"
    return codec


async def close(client: Client) -> None:
    """Release what `connect` opened beside the client (the vault's connections)."""
    vault = codec_of(client).vault
    if vault is not None:
        await vault.close()


async def register_search_attributes(
    settings: Settings, attributes: Mapping[str, str]
) -> list[str]:
    """Add the custom search attributes (name → kind, e.g. "Keyword") the namespace lacks;
    returns the names added. Temporal Cloud refuses this call: there they are added with
    `tcld` or in its web console."""
    # The operator service carries no payloads, so this client needs no codec (nor the
    # database its key vault lives in): `oms temporal search-attributes` runs before anything.
    client = await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=settings.temporal_api_key or None,
    )
    namespace = settings.temporal_namespace
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: indexed_value_type(kind)
        for name, kind in attributes.items()
        if name not in listed.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


def indexed_value_type(kind: str) -> IndexedValueType.ValueType:
    """The API's value for a kind spelled as `temporal operator` does (KeywordList)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).upper()
    return IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{snake}")
