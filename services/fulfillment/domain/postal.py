"""Postal codes and where they are: the rules for reading a country's postal codes from a data
set (the US ZIP centroids the `zipcodes` package ships, or a file in the GeoNames postal-code
dump layout) and for finding the entry that locates a recipient.

Pure: it reads records and lines it is handed, never a file or a package; the sources that
hand them over live in `services.fulfillment.postal_data`.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from oms_platform import limits
from oms_platform.errors import DomainError
from oms_platform.postal import MAX_POSTAL_CODE_LENGTH
from services.fulfillment.domain.common import Coordinates, normalize_postal_code

# The GeoNames postal-code dump (download.geonames.org/export/zip/, one file per country or
# allCountries.txt): tab-separated, no header; these are the columns oms reads, counted from 0.
# The others (admin names and codes, accuracy) are not needed.
GEONAMES_COUNTRY_CODE = 0
GEONAMES_POSTAL_CODE = 1
GEONAMES_LATITUDE = 9
GEONAMES_LONGITUDE = 10
GEONAMES_MIN_COLUMNS = GEONAMES_LONGITUDE + 1

# How many bad lines an error spells out; the count of the rest follows.
MAX_REPORTED_PROBLEMS = 20


@dataclass(frozen=True)
class PostalCode:
    """One postal code (normalized) and the point that stands for it."""

    postal_code: str
    coordinates: Coordinates


@dataclass(frozen=True)
class CountryPostalCodes:
    """One country's postal codes from one source, each code once: what one load replaces."""

    country_code: str
    source: str
    codes: tuple[PostalCode, ...]
    # Entries of the source without coordinates (the data set's 0/0 or empty), left out.
    skipped: int = 0


@dataclass(frozen=True)
class Problem:
    """One bad entry of a source: where (a line number, or a record's key) and what is wrong."""

    where: str
    what: str


class MalformedPostalData(DomainError):
    """A postal code source that cannot be loaded, with every problem found (the first
    MAX_REPORTED_PROBLEMS of them spelled out)."""

    def __init__(self, source: str, problems: list[Problem], total: int | None = None) -> None:
        self.source = source
        self.problems = problems[:MAX_REPORTED_PROBLEMS]
        self.total = len(problems) if total is None else total
        listed = "\n".join(f"  {p.where}: {p.what}" for p in self.problems)
        more = self.total - len(self.problems)
        tail = f"\n  and {more} more" if more > 0 else ""
        super().__init__(
            f"{source}: {self.total} malformed {'entry' if self.total == 1 else 'entries'}, "
            f"nothing loaded\n{listed}{tail}"
        )


def postal_prefixes(postal_code: str) -> list[str]:
    """Every leading part of a normalized postal code, longest first: the keys a recipient's
    code can match, so the lookup is a handful of index probes rather than a scan."""
    code = postal_code[:MAX_POSTAL_CODE_LENGTH]
    return [code[:n] for n in range(len(code), 0, -1)]


# ---- reading a source ---------------------------------------------------------------------


def _coordinate(text: str, name: str, bound: float) -> tuple[float | None, str]:
    """The value of one coordinate column, or why it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None, f"{name} {limits.echo(text)} is not a number"
    if not math.isfinite(value) or not -bound <= value <= bound:
        return None, f"{name} {limits.echo(text)} is outside -{bound:g}..{bound:g}"
    return value, ""


def _point(latitude: str, longitude: str) -> tuple[Coordinates | None, list[str]]:
    """The point two coordinate texts name; None without problems when the entry has no
    coordinates (both empty, or both zero: the data sets' mark for an unknown place)."""
    latitude, longitude = latitude.strip(), longitude.strip()
    if not latitude and not longitude:
        return None, []
    lat, lat_problem = _coordinate(latitude, "latitude", 90)
    lon, lon_problem = _coordinate(longitude, "longitude", 180)
    problems = [p for p in (lat_problem, lon_problem) if p]
    if lat is None or lon is None:
        return None, problems
    if lat == 0 and lon == 0:
        return None, []
    return Coordinates(lat, lon), []


def _code(text: str) -> tuple[str, str]:
    """A postal code normalized, or why it cannot be one."""
    code = normalize_postal_code(text)
    if not code:
        return "", "postal code is empty"
    if len(code) > MAX_POSTAL_CODE_LENGTH:
        return "", (
            f"postal code {limits.echo(text)} is longer than {MAX_POSTAL_CODE_LENGTH} characters"
        )
    return code, ""


def _centroid(points: list[Coordinates]) -> Coordinates:
    """The middle of points on the sphere (a code with several places gets one point between
    them; averaging on the sphere keeps places either side of the 180th meridian together)."""
    if len(points) == 1:
        return points[0]
    x = y = z = 0.0
    for p in points:
        lat, lon = math.radians(p.latitude), math.radians(p.longitude)
        x += math.cos(lat) * math.cos(lon)
        y += math.cos(lat) * math.sin(lon)
        z += math.sin(lat)
    lon = math.atan2(y, x)
    lat = math.atan2(z, math.hypot(x, y))
    return Coordinates(round(math.degrees(lat), 6), round(math.degrees(lon), 6))


class _Collector:
    """Points per (country, code) as a source is read, with what was wrong and skipped."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.points: dict[str, dict[str, list[Coordinates]]] = {}
        self.skipped: dict[str, int] = {}
        self.problems: list[Problem] = []
        self.problem_count = 0

    def problem(self, where: str, what: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(Problem(where, what))

    def add(self, where: str, country: str, code_text: str, latitude: str, longitude: str) -> None:
        found: list[str] = []
        if not limits.is_country_code(country):
            found.append(f"country code {limits.echo(country)} is not ISO 3166-1 alpha-2")
        code, code_problem = _code(code_text)
        if code_problem:
            found.append(code_problem)
        point, point_problems = _point(latitude, longitude)
        found += point_problems
        for what in found:
            self.problem(where, what)
        if found:
            return
        country = country.upper()
        by_code = self.points.setdefault(country, {})
        if point is None:
            self.skipped[country] = self.skipped.get(country, 0) + 1
            by_code.setdefault(code, [])
            return
        by_code.setdefault(code, []).append(point)

    def result(self) -> list[CountryPostalCodes]:
        if not self.points and not self.problem_count:
            self.problem("everywhere", "no postal codes")
        for country in sorted(self.points):
            if not any(self.points[country].values()):
                # Loading it would only delete what the country had.
                self.problem("everywhere", f"no postal code of {country} has coordinates")
        if self.problem_count:
            raise MalformedPostalData(self.source, self.problems, self.problem_count)
        return [
            CountryPostalCodes(
                country,
                self.source,
                tuple(
                    PostalCode(code, _centroid(points))
                    for code, points in self.points[country].items()
                    if points
                ),
                self.skipped.get(country, 0),
            )
            for country in sorted(self.points)
        ]


def parse_us_zip_records(
    records: Iterable[Mapping[str, object]], source: str
) -> CountryPostalCodes:
    """US ZIP codes from records shaped as the `zipcodes` package has them (`zip_code`, `lat`,
    `long` as text). Every record is a US ZIP whatever its `country` says (that is where a
    military post office is); records without coordinates are skipped."""
    collector = _Collector(source)
    for record in records:
        code = str(record.get("zip_code", ""))
        collector.add(
            f"ZIP {limits.echo(code)}",
            "US",
            code,
            str(record.get("lat", "")),
            str(record.get("long", "")),
        )
    [us] = collector.result()
    return us


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, columns) of each non-blank line: tab-separated when the first such line
    has a tab (the GeoNames dump), comma-separated (RFC 4180 quoting) otherwise."""
    numbered = enumerate(lines, start=1)
    first = next(((n, line) for n, line in numbered if line.strip()), None)
    if first is None:
        return
    start, line = first
    if "\t" in line:
        for number, text in itertools.chain([first], numbered):
            if text.strip():
                yield number, text.rstrip("\r\n").split("\t")
        return
    reader = csv.reader(itertools.chain([line], (text for _, text in numbered)))
    for columns in reader:
        if any(c.strip() for c in columns):
            # line_num counts the lines the reader took, the first of them at `start`.
            yield start - 1 + reader.line_num, columns


def parse_geonames(
    lines: Iterable[str], source: str, countries: frozenset[str] = frozenset()
) -> list[CountryPostalCodes]:
    """Postal codes per country from lines in the GeoNames postal-code dump layout (country
    code, postal code, place name, admin names and codes, latitude, longitude, accuracy),
    tab- or comma-separated; only `countries` when given. A code listed for several places
    gets the point between them. MalformedPostalData names every bad line."""
    wanted = {c.upper() for c in countries}
    collector = _Collector(source)
    for number, columns in _rows(lines):
        where = f"line {number}"
        country = columns[GEONAMES_COUNTRY_CODE].strip()
        if wanted and country.upper() not in wanted:
            continue
        if len(columns) < GEONAMES_MIN_COLUMNS:
            collector.problem(
                where,
                f"{len(columns)} column{'' if len(columns) == 1 else 's'}; the GeoNames layout "
                f"has latitude and longitude in columns {GEONAMES_LATITUDE + 1} and "
                f"{GEONAMES_LONGITUDE + 1}",
            )
            continue
        collector.add(
            where,
            country,
            columns[GEONAMES_POSTAL_CODE],
            columns[GEONAMES_LATITUDE],
            columns[GEONAMES_LONGITUDE],
        )
    for country in sorted(wanted - set(collector.points)):
        collector.problem("everywhere", f"no postal codes of {country}")
    return collector.result()
