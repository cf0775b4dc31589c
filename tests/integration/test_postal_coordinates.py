"""Postal coordinates for distance routing, on a real Postgres and a real FulfillmentService:
`oms postal load us` puts every US ZIP's centroid in fulfillment's schema (again and again to
the same rows), routing then tells apart recipients the seeded three-digit prefixes could not,
the lookup stays an index lookup, and `oms postal load --file` loads another country from a
GeoNames-layout file, refusing a malformed one whole.

The module has a database of its own: loading every US ZIP changes where other tests' orders
would go."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg
import pytest
from oms.common.v1 import common_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as pb

from oms_platform.settings import Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from services.fulfillment import domain, store
from tests.callers import oms_cli
from tests.integration.fulfillment_server import Stub, fulfillment_database

MINNEAPOLIS = ("55401", 44.9790, -93.2740)
KANSAS_CITY = ("64105", 39.1020, -94.5890)
# Neither three-digit prefix (558, 672) is among the seeded ones.
DULUTH = common_pb2.PostalAddress(
    line1="1 Superior St", city="Duluth", region="MN", postal_code="55802", country_code="US"
)
WICHITA = common_pb2.PostalAddress(
    line1="1 Douglas Ave", city="Wichita", region="KS", postal_code="67202", country_code="US"
)

# GeoNames' layout: country, code, place, admin name/code 1-3, latitude, longitude, accuracy.
DE_FILE = (
    "DE\t10115\tBerlin\tBerlin\tBE\t\t00\tBerlin, Stadt\t11000\t52.5323\t13.3846\t4\n"
    "DE\t80331\tMünchen\tBayern\tBY\tOberbayern\t091\tMünchen\t09162\t48.1372\t11.5755\t4\n"
)


@pytest.fixture(scope="module")
def cli_settings(dsn: str) -> Settings:
    return Settings.from_env(env={}, database_url=dsn, log_format="console")


@pytest.fixture(scope="module")
async def us_loaded(cli_settings: Settings) -> str:
    """`oms postal load us` run once for the tests that need every US ZIP; its output."""
    code, out, err = await oms_cli(cli_settings, "postal", "load", "us")
    assert code == 0, err
    return out


async def postal_rows(sql: asyncpg.Connection, country: str) -> list[tuple[str, float, float, str]]:
    rows = await sql.fetch(
        "SELECT postal_prefix, latitude, longitude, source FROM postal_coordinates"
        " WHERE country_code = $1 ORDER BY postal_prefix",
        country,
    )
    return [tuple(r) for r in rows]


async def place(stub: Stub, location_id: str, postal_code: str, lat: float, lon: float) -> None:
    await stub.UpsertLocation(
        pb.UpsertLocationRequest(
            location=pb.Location(
                location_id=location_id,
                name=location_id,
                type=pb.LOCATION_TYPE_WAREHOUSE,
                address=common_pb2.PostalAddress(
                    line1="1 Dock Rd", city="X", postal_code=postal_code, country_code="US"
                ),
                latitude=lat,
                longitude=lon,
                priority=1,
                enabled=True,
            )
        )
    )


async def routed_to(stub: Stub, sku: str, address: common_pb2.PostalAddress) -> tuple[str, str]:
    """Where a one-unit order to `address` goes, and why."""
    order_id = str(uuid.uuid4())
    response = await stub.CreateFulfillmentOrders(
        pb.CreateFulfillmentOrdersRequest(
            order_id=order_id,
            idempotency_key="route",
            delivery_groups=[
                pb.RoutingDeliveryGroup(
                    delivery_group_id=f"{order_id}-dg",
                    address=address,
                    lines=[pb.RoutingLine(order_line_id=f"{order_id}-l", sku=sku, quantity=1)],
                )
            ],
        )
    )
    [fo] = response.fulfillment_orders
    return fo.location_id, response.decisions[0]


# ---- the US ZIPs, through the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
async def dsn(postgres: EmbeddedPostgres) -> str:
    return await fulfillment_database(postgres, "oms_postal")


async def test_orders_go_to_the_nearer_location_by_real_zips_once_us_is_loaded(
    stub: Stub, sql: asyncpg.Connection, cli_settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:6]
    north, south = f"pz-{tag}-minneapolis", f"pz-{tag}-kansas-city"
    await place(stub, north, *MINNEAPOLIS)
    await place(stub, south, *KANSAS_CITY)
    sku = f"SKU-POSTAL-{tag}"
    await stub.SetInventoryLevels(
        pb.SetInventoryLevelsRequest(
            levels=[
                pb.InventoryLevel(location_id=loc, sku=sku, on_hand=10) for loc in (north, south)
            ]
        )
    )
    # With the seeded prefixes only (no load yet, or after taking a load away), Duluth and
    # Wichita are nowhere: a tie, settled by location id, sends both to the same place.
    await sql.execute("DELETE FROM postal_coordinates WHERE source <> 'seed'")
    before = {await routed_to(stub, sku, a) for a in (DULUTH, WICHITA)}
    assert {location for location, _ in before} == {south}

    code, _out, err = await oms_cli(cli_settings, "postal", "load", "us")
    assert code == 0, err

    duluth, duluth_why = await routed_to(stub, sku, DULUTH)
    wichita, wichita_why = await routed_to(stub, sku, WICHITA)
    assert (duluth, wichita) == (north, south)
    assert "km from 55802" in duluth_why and "nearer than" in duluth_why
    assert "km from 67202" in wichita_why


async def test_loading_us_reports_the_codes_and_loading_again_leaves_the_same_rows(
    us_loaded: str, sql: asyncpg.Connection, cli_settings: Settings
) -> None:
    assert us_loaded.startswith("US: ")
    loaded = int(us_loaded.split()[1].replace(",", ""))
    assert loaded > 40_000
    assert "postal codes loaded from zipcodes 3.0.0" in us_loaded
    first = await postal_rows(sql, "US")

    code, out, err = await oms_cli(cli_settings, "postal", "load", "us", "--json")

    assert code == 0, err
    report = json.loads(out)["countries"]["US"]
    assert report["loaded"] == loaded and report["source"] == "zipcodes 3.0.0"
    assert report["skipped"] > 0  # the data set's military ZIPs at 0/0
    assert await postal_rows(sql, "US") == first
    # The 16 seeded prefixes are still there, next to every loaded ZIP.
    sources = [source for *_, source in first]
    assert (sources.count("seed"), sources.count("zipcodes 3.0.0")) == (16, loaded)


async def test_a_full_zip_gets_its_centroid_and_a_code_the_data_set_lacks_its_prefix(
    us_loaded: str, sql: asyncpg.Connection
) -> None:
    def at(postal_code: str, country_code: str = "US") -> domain.PostalAddress:
        return domain.PostalAddress(postal_code=postal_code, country_code=country_code)

    loop = await store.coordinates_of(sql, at("60601"))
    chicago_prefix = await store.coordinates_of(sql, at("60600"))  # no such ZIP
    zip_plus_four = await store.coordinates_of(sql, at("60601-1234"))

    assert chicago_prefix == domain.Coordinates(41.8781, -87.6298)  # the seeded 606
    assert loop is not None and loop != chicago_prefix
    assert zip_plus_four == loop
    assert await store.coordinates_of(sql, at("10118", "CA")) is None


async def test_the_lookup_stays_an_index_lookup_with_every_us_zip_loaded(
    us_loaded: str, sql: asyncpg.Connection
) -> None:
    assert await sql.fetchval("SELECT count(*) FROM postal_coordinates") > 40_000

    plan = "\n".join(
        row[0]
        for row in await sql.fetch(
            "EXPLAIN " + store.SQL_POSTAL_COORDINATES, "US", domain.postal_prefixes("558021234")
        )
    )

    assert "postal_coordinates_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan


# ---- other countries, from a file ---------------------------------------------------------


async def test_a_geonames_file_loads_its_country_and_a_new_file_replaces_it(
    tmp_path: Path, sql: asyncpg.Connection, cli_settings: Settings
) -> None:
    path = tmp_path / "DE.txt"
    path.write_text(DE_FILE, encoding="utf-8")
    us_before = await postal_rows(sql, "US")

    code, out, err = await oms_cli(cli_settings, "postal", "load", "--file", str(path))

    assert code == 0, err
    assert out.splitlines()[0] == "DE: 2 postal codes loaded from file DE.txt"
    assert await postal_rows(sql, "DE") == [
        ("10115", 52.5323, 13.3846, "file DE.txt"),
        ("80331", 48.1372, 11.5755, "file DE.txt"),
    ]
    berlin = domain.PostalAddress(postal_code="10115", country_code="de")
    assert await store.coordinates_of(sql, berlin) == domain.Coordinates(52.5323, 13.3846)

    smaller = tmp_path / "DE-2.txt"
    smaller.write_text(DE_FILE.splitlines()[1] + "\n", encoding="utf-8")
    code, out, err = await oms_cli(cli_settings, "postal", "load", "--file", str(smaller))

    assert code == 0, err
    assert [row[0] for row in await postal_rows(sql, "DE")] == ["80331"]
    assert await postal_rows(sql, "US") == us_before
    code, out, err = await oms_cli(cli_settings, "postal", "list", "--json")
    assert code == 0, err
    assert {"country_code": "DE", "source": "file DE-2.txt", "codes": 1} in json.loads(out)


async def test_a_malformed_file_is_refused_whole_naming_each_bad_line(
    tmp_path: Path, sql: asyncpg.Connection, cli_settings: Settings
) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text(
        "AT\t1010\tWien\t\t\t\t\t\t\t48.2064\t16.3707\t4\n"
        + DE_FILE
        + "DE\t01067\tDresden\t\t\t\t\t\t\t51.05\n"
        + "FR\t75001\tParis\t\t\t\t\t\t\t48.86\teast\t4\n",
        encoding="utf-8",
    )
    de_before = await postal_rows(sql, "DE")

    code, _out, err = await oms_cli(cli_settings, "postal", "load", "--file", str(path))

    assert code == 1
    assert "file mixed.txt: 2 malformed entries, nothing loaded" in err
    assert "line 4: 10 columns; the GeoNames layout has latitude and longitude" in err
    assert "line 5: longitude 'east' is not a number" in err
    assert await postal_rows(sql, "AT") == []
    assert await postal_rows(sql, "DE") == de_before


async def test_load_needs_one_source_and_a_missing_file_is_named(cli_settings: Settings) -> None:
    neither = await oms_cli(cli_settings, "postal", "load")
    both = await oms_cli(cli_settings, "postal", "load", "us", "--file", "x.txt")
    missing = await oms_cli(cli_settings, "postal", "load", "--file", "/nonexistent/DE.txt")

    assert neither[0] == both[0] == 2
    assert "name a data set (us) or --file PATH" in neither[2]
    assert missing[0] == 1 and "/nonexistent/DE.txt: No such file or directory" in missing[2]
