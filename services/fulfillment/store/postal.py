"""Fulfillment's store, postal codes: replacing a country's loaded postal coordinates and
counting what each country has. Routing reads them through `routing.coordinates_of`."""

from __future__ import annotations

from dataclasses import dataclass

from services.fulfillment import domain
from services.fulfillment.store.common import Conn

# The source of the prefixes migration 0002 seeded (migration 0004's default).
SEED_SOURCE = "seed"

# A load replaces whatever the country had from earlier loads, never the seeded prefixes ...
SQL_DELETE_LOADED_POSTAL_CODES = """
DELETE FROM postal_coordinates WHERE country_code = $1 AND source <> $2"""

# ... with one statement for all its codes (tens of thousands of rows in one round trip). A
# code that equals a seeded prefix takes its place: the data set knows better.
SQL_INSERT_POSTAL_CODES = """
INSERT INTO postal_coordinates (country_code, postal_prefix, latitude, longitude, source)
SELECT $1, code, latitude, longitude, $5
FROM unnest($2::text[], $3::float8[], $4::float8[]) AS c (code, latitude, longitude)
ON CONFLICT (country_code, postal_prefix) DO UPDATE
SET latitude = excluded.latitude, longitude = excluded.longitude, source = excluded.source"""

# The planner's row estimates of a table that grew from a few rows to tens of thousands.
SQL_ANALYZE_POSTAL_CODES = "ANALYZE postal_coordinates"

SQL_POSTAL_CODE_COUNTS = """
SELECT country_code, source, count(*) AS codes
FROM postal_coordinates GROUP BY country_code, source ORDER BY country_code, source"""


@dataclass(frozen=True)
class PostalCodeCount:
    """How many postal codes (or seeded prefixes) a country has from one source."""

    country_code: str
    source: str
    codes: int

    @property
    def loaded(self) -> bool:
        """From a load of a data set, not the seeded prefixes."""
        return self.source != SEED_SOURCE


async def replace_postal_codes(conn: Conn, country: domain.CountryPostalCodes) -> None:
    """Make `country`'s codes the ones its loads gave it (the seeded prefixes stay); in the
    caller's transaction, so loading several countries is all or nothing."""
    await conn.execute(SQL_DELETE_LOADED_POSTAL_CODES, country.country_code, SEED_SOURCE)
    await conn.execute(
        SQL_INSERT_POSTAL_CODES,
        country.country_code,
        [c.postal_code for c in country.codes],
        [c.coordinates.latitude for c in country.codes],
        [c.coordinates.longitude for c in country.codes],
        country.source,
    )


async def analyze_postal_codes(conn: Conn) -> None:
    """Refresh the table's statistics after a load changed its size."""
    await conn.execute(SQL_ANALYZE_POSTAL_CODES)


async def postal_code_counts(conn: Conn) -> list[PostalCodeCount]:
    """Codes per country and source, by country."""
    rows = await conn.fetch(SQL_POSTAL_CODE_COUNTS)
    return [PostalCodeCount(r["country_code"], r["source"], r["codes"]) for r in rows]
