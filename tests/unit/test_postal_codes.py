"""Reading postal codes for distance routing: the US ZIP records the `zipcodes` package ships
and files in the GeoNames postal-code layout, every bad line named by number with what is
wrong, and the prefixes a recipient's code is looked up by."""

from __future__ import annotations

from pathlib import Path

import pytest

from oms_platform.postal import MAX_POSTAL_CODE_LENGTH
from services.fulfillment import domain, postal_data
from services.fulfillment.domain import Coordinates, MalformedPostalData, PostalCode

# Lines as GeoNames writes them: country, code, place, admin name/code 1-3, lat, long, accuracy.
BERLIN = "DE\t10115\tBerlin\tBerlin\tBE\t\t00\tBerlin, Stadt\t11000\t52.5323\t13.3846\t4"
MUNICH = "DE\t80331\tMünchen\tBayern\tBY\tOberbayern\t091\tMünchen\t09162\t48.1372\t11.5755\t4"
LONDON = "GB\tSW1A\tLondon\tEngland\tENG\t\t\t\t\t51.5010\t-0.1416\t4"


def geonames(
    *lines: str, countries: frozenset[str] = frozenset()
) -> list[domain.CountryPostalCodes]:
    return domain.parse_geonames([line + "\n" for line in lines], "file test.txt", countries)


def problems(error: pytest.ExceptionInfo[MalformedPostalData]) -> list[tuple[str, str]]:
    return [(p.where, p.what) for p in error.value.problems]


# ---- the GeoNames layout --------------------------------------------------------------------


def test_a_geonames_file_gives_each_country_its_codes_with_their_coordinates() -> None:
    de, gb = geonames(BERLIN, LONDON, MUNICH)

    assert (de.country_code, de.source, de.skipped) == ("DE", "file test.txt", 0)
    assert de.codes == (
        PostalCode("10115", Coordinates(52.5323, 13.3846)),
        PostalCode("80331", Coordinates(48.1372, 11.5755)),
    )
    assert gb.codes == (PostalCode("SW1A", Coordinates(51.501, -0.1416)),)


def test_only_the_countries_asked_for_are_read() -> None:
    [gb] = geonames(BERLIN, LONDON, "XX\tbroken", countries=frozenset({"gb"}))

    assert gb.country_code == "GB" and len(gb.codes) == 1


def test_asking_for_a_country_the_file_lacks_is_an_error() -> None:
    with pytest.raises(MalformedPostalData) as error:
        geonames(BERLIN, countries=frozenset({"FR"}))

    assert problems(error) == [("everywhere", "no postal codes of FR")]


def test_codes_are_normalized_as_recipients_codes_are() -> None:
    [gb] = geonames("gb\tsw1a 1aa\tLondon\t\t\t\t\t\t\t51.5010\t-0.1416\t6")

    assert gb.country_code == "GB"
    assert [c.postal_code for c in gb.codes] == ["SW1A1AA"]


def test_a_code_listed_for_several_places_gets_the_point_between_them() -> None:
    [de] = geonames(
        "DE\t01945\tA\t\t\t\t\t\t\t51.0\t14.0\t4",
        "DE\t01945\tB\t\t\t\t\t\t\t52.0\t14.0\t4",
    )

    [code] = de.codes
    assert code.coordinates.latitude == pytest.approx(51.5, abs=0.01)
    assert code.coordinates.longitude == pytest.approx(14.0, abs=1e-6)


def test_places_either_side_of_the_180th_meridian_meet_on_it_not_at_greenwich() -> None:
    [ru] = geonames(
        "RU\t689000\tA\t\t\t\t\t\t\t65.0\t179.5\t4",
        "RU\t689000\tB\t\t\t\t\t\t\t65.0\t-179.5\t4",
    )

    assert abs(ru.codes[0].coordinates.longitude) == pytest.approx(180.0, abs=0.01)


def test_a_comma_separated_file_with_quoted_commas_reads_the_same() -> None:
    [de] = geonames(
        'DE,10115,"Berlin, Mitte",Berlin,BE,,00,"Berlin, Stadt",11000,52.5323,13.3846,4'
    )

    assert de.codes == (PostalCode("10115", Coordinates(52.5323, 13.3846)),)


def test_entries_without_coordinates_are_left_out_and_counted() -> None:
    [de] = geonames(
        BERLIN, "DE\t99999\tNowhere\t\t\t\t\t\t\t\t\t", "DE\t88888\tNull\t\t\t\t\t\t\t0\t0\t"
    )

    assert [c.postal_code for c in de.codes] == ["10115"]
    assert de.skipped == 2


def test_blank_lines_are_ignored_and_line_numbers_count_them() -> None:
    with pytest.raises(MalformedPostalData) as error:
        geonames(BERLIN, "", "DE\t10117\tBerlin\t\t\t\t\t\t\tnorth\t13.38\t4")

    assert problems(error) == [("line 3", "latitude 'north' is not a number")]


def test_every_bad_line_is_named_with_what_is_wrong_and_nothing_is_returned() -> None:
    lines = [
        BERLIN,
        "DE\t10117\tBerlin",
        "ZZ\t10117\tBerlin\t\t\t\t\t\t\t52.5\t13.4\t4",
        "DE\t - \tBerlin\t\t\t\t\t\t\t52.5\t13.4\t4",
        "DE\t10117\tBerlin\t\t\t\t\t\t\t95\t13.4\t4",
        "DE\t10117\tBerlin\t\t\t\t\t\t\t52.5\t\t4",
        "DE\t" + "9" * 40 + "\tBerlin\t\t\t\t\t\t\t52.5\t13.4\t4",
        MUNICH,
    ]
    with pytest.raises(MalformedPostalData) as error:
        geonames(*lines)

    assert problems(error) == [
        (
            "line 2",
            "3 columns; the GeoNames layout has latitude and longitude in columns 10 and 11",
        ),
        ("line 3", "country code 'ZZ' is not ISO 3166-1 alpha-2"),
        ("line 4", "postal code is empty"),
        ("line 5", "latitude '95' is outside -90..90"),
        ("line 6", "longitude '' is not a number"),
        ("line 7", f"postal code '{'9' * 40}' is longer than 32 characters"),
    ]
    message = str(error.value)
    assert message.startswith("file test.txt: 6 malformed entries, nothing loaded")
    assert "  line 5: latitude '95' is outside -90..90" in message


def test_a_file_with_thousands_of_bad_lines_names_the_first_and_counts_the_rest() -> None:
    with pytest.raises(MalformedPostalData) as error:
        geonames(*["DE\t10115"] * 1000)

    assert len(error.value.problems) == domain.postal.MAX_REPORTED_PROBLEMS
    assert error.value.total == 1000
    assert str(error.value).endswith("and 980 more")


def test_an_empty_file_or_one_whose_codes_all_lack_coordinates_is_refused() -> None:
    with pytest.raises(MalformedPostalData) as empty:
        geonames("", " ")
    with pytest.raises(MalformedPostalData) as unplaced:
        geonames("DE\t10115\tBerlin\t\t\t\t\t\t\t\t\t")

    assert problems(empty) == [("everywhere", "no postal codes")]
    assert problems(unplaced) == [("everywhere", "no postal code of DE has coordinates")]


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "DE.txt"
    path.write_bytes(BERLIN.encode() + b"\n" + "DE\t80331\tM\xfcnchen".encode("latin-1") + b"\n")

    with pytest.raises(MalformedPostalData) as error:
        postal_data.geonames_file(path)

    [(where, what)] = problems(error)
    assert where == "line 2" and what.startswith("is not UTF-8 text")


# ---- the zipcodes package's records -----------------------------------------------------------


def test_us_zip_records_become_us_codes_and_those_at_0_0_are_left_out() -> None:
    us = domain.parse_us_zip_records(
        [
            {"zip_code": "10118", "lat": "40.7486", "long": "-73.9864", "country": "US"},
            # A military post office: a US ZIP whatever country its post is in, place unknown.
            {"zip_code": "09002", "lat": "0.0000", "long": "0.0000", "country": "DE"},
        ],
        "zipcodes 3.0.0",
    )

    assert (us.country_code, us.source, us.skipped) == ("US", "zipcodes 3.0.0", 1)
    assert us.codes == (PostalCode("10118", Coordinates(40.7486, -73.9864)),)


def test_a_bad_zip_record_is_named_by_its_zip() -> None:
    with pytest.raises(MalformedPostalData) as error:
        domain.parse_us_zip_records([{"zip_code": "10118", "lat": "x", "long": "1"}], "zipcodes")

    assert problems(error) == [("ZIP '10118'", "latitude 'x' is not a number")]


def test_the_package_ships_every_us_zip_with_coordinates() -> None:
    us = postal_data.us_zip_codes()

    assert us.country_code == "US" and us.source.startswith("zipcodes ")
    assert len(us.codes) > 40_000
    by_code = {c.postal_code: c.coordinates for c in us.codes}
    # The Empire State Building's ZIP is in Manhattan, Duluth's far from Minneapolis'.
    assert by_code["10118"].latitude == pytest.approx(40.75, abs=0.05)
    assert domain.haversine_km(by_code["55802"], by_code["55401"]) > 200


# ---- looking a code up ------------------------------------------------------------------------


def test_a_code_is_looked_up_by_every_prefix_longest_first() -> None:
    assert domain.postal_prefixes("10118") == ["10118", "1011", "101", "10", "1"]
    assert domain.postal_prefixes("") == []
    assert len(domain.postal_prefixes("9" * 100)) == MAX_POSTAL_CODE_LENGTH
