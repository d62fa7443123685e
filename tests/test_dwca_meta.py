"""meta.xml parsing and row projection: column order from meta.xml, escapes, defaults, clear errors."""

from __future__ import annotations

import zipfile

import pytest

from beam_gbif.core.errors import OptionError
from beam_gbif.io.dwca.meta import MULTIMEDIA_ROW_TYPE, DwcaError, parse_meta, safe_member_name, unescape_delimiter
from beam_gbif.io.dwca.rows import MEDIA_COLUMNS, projection

REAL_ARCHIVE = "dwca/0026367-210914110416597.zip"


@pytest.fixture(scope="module")
def real_meta(shared_data):
    with zipfile.ZipFile(shared_data / REAL_ARCHIVE) as archive:
        return parse_meta(archive.read("meta.xml"))


def _meta(core_fields: str, extension: str = "", core_attributes: str = 'fieldsTerminatedBy="\\t" ignoreHeaderLines="1"') -> bytes:
    return (
        f'<archive xmlns="http://rs.tdwg.org/dwc/text/"><core rowType="http://rs.tdwg.org/dwc/terms/Occurrence" {core_attributes}>'
        f"<files><location>occurrence.txt</location></files><id index=\"0\"/>{core_fields}</core>{extension}</archive>"
    ).encode()


def test_real_meta_xml_declares_core_and_multimedia(real_meta):
    core, media = real_meta.core, real_meta.multimedia()
    assert (core.location, core.id_index, core.fields_terminated_by, core.ignore_header_lines) == ("occurrence.txt", 0, "\t", 1)
    assert core.width == 250
    assert core.field("speciesKey").index == 228
    assert core.field("http://rs.tdwg.org/dwc/terms/scientificName").index == 182
    assert core.field("geodeticDatum").default == "WGS84" and core.field("geodeticDatum").index is None
    assert media.location == "multimedia.txt" and media.row_type == MULTIMEDIA_ROW_TYPE
    assert [media.field(name).index for name in ("type", "identifier", "license", "rightsHolder")] == [1, 3, 13, 14]
    assert [e.location for e in real_meta.extensions] == ["verbatim.txt", "multimedia.txt"]


def test_columns_follow_meta_xml_not_a_fixed_order():
    fields = (
        '<field index="0" term="http://rs.gbif.org/terms/1.0/gbifID"/>'
        '<field index="2" term="http://rs.gbif.org/terms/1.0/speciesKey"/>'
        '<field index="1" term="http://rs.tdwg.org/dwc/terms/family"/>'
        '<field term="http://rs.tdwg.org/dwc/terms/country" default="NO"/>'
    )
    core = parse_meta(_meta(fields)).core
    columns = projection(core, ["speciesKey", "http://rs.tdwg.org/dwc/terms/family", "country"])
    assert columns.parse(b'42\tRosaceae "s.l."\t5352251\n') == ("42", ("5352251", 'Rosaceae "s.l."', "NO"))


def test_delimiter_escapes_are_unescaped():
    assert unescape_delimiter("\\t") == "\t"
    assert unescape_delimiter("\\r\\n") == "\r\n"
    assert unescape_delimiter(",") == ","
    core = parse_meta(_meta('<field index="1" term="x/label"/>', core_attributes='fieldsTerminatedBy="," linesTerminatedBy="\\r\\n"')).core
    assert (core.fields_terminated_by, core.lines_terminated_by, core.ignore_header_lines) == (",", "\r\n", 0)
    assert projection(core, ["label"]).parse(b"7,a\tb\r\n") == ("7", ("a\tb",))


def test_rows_with_too_few_columns_or_no_id_are_rejected(real_meta):
    columns = projection(real_meta.multimedia(), MEDIA_COLUMNS)
    assert columns.parse(b"123\tStillImage\timage/jpeg") is None
    assert columns.parse(b"") is None
    assert columns.parse("\t" * 14) is None  # no gbifID
    parsed = columns.parse("1\tStillImage\timage/jpeg\thttps://x/y.jpg" + "\t" * 11)
    assert parsed[0] == "1" and columns.as_dict(parsed[1])["identifier"] == "https://x/y.jpg"


def test_non_utf8_encoding_is_honoured():
    core = parse_meta(_meta('<field index="1" term="x/label"/>', core_attributes='fieldsTerminatedBy="\\t" encoding="ISO-8859-1"')).core
    assert projection(core, ["label"]).parse("9\tCarex bohémica".encode("latin-1")) == ("9", ("Carex bohémica",))


def test_missing_label_column_names_the_column_and_what_exists(real_meta):
    with pytest.raises(DwcaError, match=r"no column 'speciesKeyy'.*scientificName"):
        projection(real_meta.core, ["speciesKeyy"], required=["speciesKeyy"])


def test_missing_multimedia_extension_is_named():
    meta = parse_meta(_meta('<field index="0" term="http://rs.gbif.org/terms/1.0/gbifID"/>'))
    with pytest.raises(DwcaError, match="no multimedia extension.*Multimedia") as raised:
        meta.multimedia("my.zip")
    assert isinstance(raised.value, OptionError)  # the CLI prints it as one line


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"not xml at all", "not valid XML"),
        (b"<html/>", "expected <archive>"),
        (b'<archive xmlns="http://rs.tdwg.org/dwc/text/"/>', "exactly one <core>"),
        (_meta("").replace(b"<location>occurrence.txt</location>", b""), "names no file"),
        (_meta("").replace(b"occurrence.txt", b"../../etc/passwd"), "unsafe file name"),
        (_meta("", core_attributes='ignoreHeaderLines="x"'), "non-integer ignoreHeaderLines"),
        (b'<!DOCTYPE a [<!ENTITY e "x">]><archive/>', "entities"),
    ],
)
def test_bad_meta_xml_gives_a_clear_error(xml, message):
    with pytest.raises(DwcaError, match=message):
        parse_meta(xml, "bad.zip")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "..", "C:evil", "a\\..\\x"])
def test_unsafe_member_names_are_refused(name):
    with pytest.raises(DwcaError, match="unsafe"):
        safe_member_name(name)


def test_safe_member_names_are_normalised():
    assert safe_member_name("dataset/./a.xml") == "dataset/a.xml"
    assert safe_member_name("occurrence.txt") == "occurrence.txt"
