"""Normalisers: every spelling of a value gives one canonical form; bad values fail with a
clear InvalidValue that never repeats them."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskguard.crypto._normalise import (
    NORMALISERS,
    _parse_phone,
    exact,
    first_chars,
    get_normaliser,
    id_check_char,
    last_digits,
    lower,
    normalise_address,
    normalise_cn_id,
    normalise_email,
    normalise_phone,
)
from riskguard.errors import ConfigError, InvalidValue


def full_width(ascii_text: str) -> str:
    """The full-width spelling people type on CJK keyboards (U+FF01-FF5E; space U+3000)."""
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) for c in ascii_text)


CANONICAL = "+8613800138000"
# The acceptance criterion's spellings and the other ways people type the same number.
SPELLINGS = [
    "13800138000",
    "+8613800138000",
    "+86 138-0013-8000",
    "+86-138-0013-8000",
    "+86.138.0013.8000",
    "0086 138 0013 8000",
    "0086-13800138000",
    "008613800138000",
    "(+86)13800138000",
    "+86 (0)138 0013 8000",
    "86 13800138000",
    "138 0013 8000",
    "tel:+86-138-0013-8000",
    full_width("13800138000"),
    "+" + full_width("86") + " " + full_width("138 0013 8000").replace("\u3000", " "),
    full_width("+86 138-0013-8000"),
]


def _assert_no_value(err: InvalidValue, value: str) -> None:
    """Neither the value nor a run of its digits appears anywhere a person or a log sees."""
    shown = f"{err}\n{err.diagnostics()}\n{err!r}"
    assert value.strip() == "" or value not in shown
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= 4:
        assert digits not in shown and digits[-4:] not in shown
    assert err.__cause__ is None and err.__suppress_context__ is (err.__context__ is not None)


# -- phone ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_normalises_to_e164(spelling: str) -> None:
    assert normalise_phone(spelling) == CANONICAL


def test_other_regions_and_fixed_lines() -> None:
    assert normalise_phone("+86 10 6552 9988") == "+861065529988"
    assert normalise_phone("(415) 555-2671", region="US") == "+14155552671"
    assert normalise_phone("+1 415 555 2671") == "+14155552671"
    assert get_normaliser("phone", region="US")("415 555 2671") == "+14155552671"
    assert get_normaliser("phone") is normalise_phone


BAD_PHONES = [
    ("not a phone", "parse"),
    ("", "parse"),
    ("+99912345678", "parse"),
    ("12345", "invalid"),
    ("+86 138 0013 800", "invalid"),
    ("23800138000", "invalid"),
    ("+8617912345678", "invalid"),
]


@pytest.mark.parametrize("value,check", BAD_PHONES)
def test_bad_phone_fails_without_the_value(value: str, check: str) -> None:
    with pytest.raises(InvalidValue) as err:
        normalise_phone(value)
    assert (err.value.kind, err.value.check) == ("phone", check)
    _assert_no_value(err.value, value)


def test_phone_type_and_region_errors() -> None:
    with pytest.raises(InvalidValue) as err:
        normalise_phone(13800138000)  # type: ignore[arg-type]
    assert err.value.check == "type" and "13800138000" not in str(err.value)
    with pytest.raises(ConfigError):
        normalise_phone("138 0013 8000", region="XX")
    with pytest.raises(ConfigError):
        get_normaliser("phone", region="XX")


def _slow(value: str) -> str | tuple[str, str]:
    try:
        return _parse_phone(value, "CN")
    except InvalidValue as exc:
        return (exc.kind, exc.check)


def _fast(value: str) -> str | tuple[str, str]:
    try:
        return normalise_phone(value)
    except InvalidValue as exc:
        return (exc.kind, exc.check)


@given(st.from_regex(r"\A1[0-9]{10}\Z", fullmatch=True))
def test_fast_path_agrees_with_phonenumbers(nsn: str) -> None:
    """The fast path (canonical E.164 and bare 11-digit CN numbers) accepts exactly what
    parse + is_valid_number accept, with the same result."""
    assert _fast(nsn) == _slow(nsn)
    assert _fast("+86" + nsn) == _slow("+86" + nsn)


@pytest.mark.parametrize("prefix", [f"1{d:02d}" for d in range(100)])
def test_fast_path_agrees_on_every_prefix(prefix: str) -> None:
    for tail in ("00000000", "12345678", "99999999", "00138000"):
        nsn = prefix + tail
        assert _fast(nsn) == _slow(nsn)
        assert _fast("+86" + nsn) == _slow("+86" + nsn)


# -- resident ID numbers ---------------------------------------------------------------------

VALID_ID = "11010519491231002X"


@pytest.mark.parametrize(
    "spelling",
    [
        VALID_ID,
        "11010519491231002x",
        "110105 19491231 002X",
        "110105-19491231-002x",
        " 110105 1949 1231 002X ",
        full_width("11010519491231002X"),
        full_width("110105 19491231 002x"),
        "110105491231002",  # the 15-digit form
        "110105 491231 002",
    ],
)
def test_id_spellings(spelling: str) -> None:
    assert normalise_cn_id(spelling) == VALID_ID


def _with_check(body: str) -> str:
    return body + id_check_char(body)


BAD_IDS = [
    ("1234", "length"),
    ("", "length"),
    ("1101051949123100222", "length"),
    ("11010519491231002A", "format"),
    ("1101051949123100XX", "format"),
    ("11010549123100A", "format"),
    (_with_check("00010519491231002"), "format"),
    (_with_check("11010519490230002"), "birth_date"),
    (_with_check("11010519491301002"), "birth_date"),
    ("110105490230002", "birth_date"),
    (_with_check("11010530000101002"), "birth_date"),
    ("110105194912310021", "checksum"),
    ("11010519491231003X", "checksum"),
]


@pytest.mark.parametrize("value,check", BAD_IDS)
def test_bad_id_fails_without_the_value(value: str, check: str) -> None:
    with pytest.raises(InvalidValue) as err:
        normalise_cn_id(value)
    assert (err.value.kind, err.value.check) == ("cn_id", check)
    _assert_no_value(err.value, value)


def test_birth_date_is_checked_against_today() -> None:
    born_today = _with_check("110105" + "20260301" + "123")
    assert normalise_cn_id(born_today, today=date(2026, 3, 1)) == born_today
    with pytest.raises(InvalidValue) as err:
        normalise_cn_id(born_today, today=date(2026, 2, 28))
    assert err.value.check == "birth_date"


def test_id_type_error() -> None:
    with pytest.raises(InvalidValue) as err:
        normalise_cn_id(None)  # type: ignore[arg-type]
    assert (err.value.kind, err.value.check) == ("cn_id", "type")


def test_foreign_permanent_resident_layout_is_accepted() -> None:
    # 2023 format: 9, province, nationality code, birth date, sequence, the same check.
    fpr = _with_check("9" + "11" + "156" + "19900101" + "001")
    assert normalise_cn_id(fpr) == fpr


PROVINCES = ["11", "12", "31", "44", "50", "65", "81", "83"]
_TODAY = date(2026, 1, 1)
ids = st.builds(
    lambda prov, area, born, seq: f"{prov}{area:04d}{born:%Y%m%d}{seq:03d}",
    st.sampled_from(PROVINCES),
    st.integers(0, 9999),
    st.dates(min_value=date(1900, 1, 1), max_value=_TODAY),
    st.integers(0, 999),
)


@given(ids)
def test_computed_check_char_validates(body: str) -> None:
    full = _with_check(body)
    assert normalise_cn_id(full, today=_TODAY) == full
    assert normalise_cn_id(full.lower(), today=_TODAY) == full


@given(ids, st.integers(0, 16), st.integers(1, 9))
def test_any_single_digit_change_fails(body: str, pos: int, delta: int) -> None:
    full = _with_check(body)
    changed = full[:pos] + str((int(full[pos]) + delta) % 10) + full[pos + 1 :]
    with pytest.raises(InvalidValue) as err:
        normalise_cn_id(changed, today=_TODAY)
    # A change that keeps the area and date plausible is caught by MOD 11-2 itself.
    assert err.value.check in ("checksum", "format", "birth_date")
    if pos >= 14 or 2 <= pos < 6:
        assert err.value.check == "checksum"


@given(ids, st.sampled_from("0123456789X"))
def test_any_other_check_char_fails(body: str, check: str) -> None:
    full = _with_check(body)
    if check == full[-1]:
        return
    with pytest.raises(InvalidValue) as err:
        normalise_cn_id(full[:-1] + check, today=_TODAY)
    assert err.value.check == "checksum"


@given(
    st.sampled_from(PROVINCES),
    st.integers(0, 9999),
    st.dates(min_value=date(1900, 1, 1), max_value=date(1999, 12, 31)),
    st.integers(0, 999),
)
def test_15_digit_upgrade(prov: str, area: int, born: date, seq: int) -> None:
    old = f"{prov}{area:04d}{born:%y%m%d}{seq:03d}"
    new = normalise_cn_id(old)
    assert new == _with_check(f"{prov}{area:04d}{born:%Y%m%d}{seq:03d}")
    assert normalise_cn_id(new) == new


def test_check_char_reference() -> None:
    # GB 11643-1999's worked example digits (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2).
    assert id_check_char("11010519491231002") == "X"
    assert id_check_char("44052418800101001") == "4"


# -- addresses, e-mail, text -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "北京市朝阳区建国路88号,3楼",
        "北京市 朝阳区 建国路 88 号\uff0c3 楼",
        "  北京市\u3000朝阳区\t建国路" + full_width("88") + "号\uff0c" + full_width("3") + "楼 ",
        "北京市朝阳区建国路88号、3楼",
    ],
)
def test_address_spellings(spelling: str) -> None:
    assert normalise_address(spelling) == "北京市朝阳区建国路88号,3楼"


def test_address_latin_and_punctuation() -> None:
    assert normalise_address("Room  A-5 \uff0c Tower B") == "room a-5, tower b"
    assert normalise_address("8号楼—2单元") == normalise_address("8号楼-2单元")
    assert normalise_address("“望京SOHO”") == '"望京soho"'


@pytest.mark.parametrize("value", ["", "   ", "\u3000\t"])
def test_empty_address(value: str) -> None:
    with pytest.raises(InvalidValue) as err:
        normalise_address(value)
    assert (err.value.kind, err.value.check) == ("address", "empty")


def test_email() -> None:
    assert normalise_email("  Li.Lei@Example.COM ") == "li.lei@example.com"
    assert normalise_email("li.lei" + full_width("@") + "example.com") == "li.lei@example.com"


@pytest.mark.parametrize("value", ["no-at", "a@", "@b.com", "a@@b.com", "a b@c.com", "a@.com"])
def test_bad_email(value: str) -> None:
    with pytest.raises(InvalidValue) as err:
        normalise_email(value)
    assert (err.value.kind, err.value.check) == ("email", "format")
    _assert_no_value(err.value, value)


def test_exact_and_lower() -> None:
    assert exact("e\u0301") == "\u00e9"
    assert exact("ABC") == "ABC"
    assert lower("ÉCOLE") == "école"
    for fn in (exact, lower, normalise_address, normalise_email):
        with pytest.raises(InvalidValue) as err:
            fn(b"x")  # type: ignore[arg-type]
        assert err.value.check == "type"


def test_registry() -> None:
    assert set(NORMALISERS) == {"phone", "cn_id", "address", "email", "exact", "lower"}
    for name in NORMALISERS:
        assert callable(get_normaliser(name))
    assert get_normaliser("cn_id")("110105491231002") == VALID_ID
    with pytest.raises(ConfigError) as err:
        get_normaliser("soundex")
    assert "soundex" in err.value.message and err.value.hint and "phone" in err.value.hint


# -- compound-index transforms ---------------------------------------------------------------


def test_last_digits() -> None:
    t = last_digits(4)
    assert repr(t) == "last_digits(4)"
    assert {t(s) for s in SPELLINGS} == {"8000"}
    with pytest.raises(InvalidValue) as err:
        t("12a")
    assert (err.value.kind, err.value.check) == ("last_digits", "length")
    with pytest.raises(InvalidValue):
        t(1234)  # type: ignore[arg-type]


def test_first_chars() -> None:
    t = first_chars(1)
    assert repr(t) == "first_chars(1)"
    assert t("  张三 ") == "张"
    assert first_chars(2)("Li") == "Li"
    with pytest.raises(InvalidValue) as err:
        t("  ")
    assert (err.value.kind, err.value.check) == ("first_chars", "empty")


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "4"])
def test_transform_sizes(n: object) -> None:
    with pytest.raises(ConfigError):
        last_digits(n)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        first_chars(n)  # type: ignore[arg-type]


def test_default_today_is_china_local_date() -> None:
    # Born tomorrow (in any time zone) is in the future.
    tomorrow = date.today() + timedelta(days=2)
    with pytest.raises(InvalidValue) as err:
        normalise_cn_id(_with_check(f"110105{tomorrow:%Y%m%d}001"))
    assert err.value.check == "birth_date"
