"""Where postal coordinates come from: the US ZIP centroids the `zipcodes` package ships (every
ZIP with its latitude and longitude, no download), and files in the GeoNames postal-code dump
layout that an operator downloaded for other countries. Read here, checked and shaped by the
domain (`domain.postal`), written in one transaction by `handlers.load_postal_codes`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from services.fulfillment import domain


def us_zip_codes() -> domain.CountryPostalCodes:
    """Every US ZIP the installed `zipcodes` package knows, with its centroid."""
    # Imported here: the package unpacks its data set on first use, which only loads need.
    import zipcodes

    # The package's Python wrapper carries no annotations (its native module does).
    records = zipcodes.list_all()  # type: ignore[no-untyped-call]
    return domain.parse_us_zip_records(records, f"zipcodes {zipcodes.__version__}")


def _text_lines(path: Path, source: str) -> Iterator[str]:
    """The file's lines as UTF-8 text (GeoNames' encoding), naming the first line that is not."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise domain.MalformedPostalData(
                    source,
                    [domain.Problem(f"line {number}", f"is not UTF-8 text ({error.reason})")],
                ) from None


def geonames_file(
    path: Path, countries: frozenset[str] = frozenset()
) -> list[domain.CountryPostalCodes]:
    """The postal codes of each country in a GeoNames-layout file (`countries` only, when
    given); MalformedPostalData names every bad line."""
    source = f"file {path.name}"
    return domain.parse_geonames(_text_lines(path, source), source, countries)
