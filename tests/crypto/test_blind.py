"""Blind indexes: the vectors (checked against an independent HKDF + HMAC written out here),
key separation, truncation, compound indexes, and search by every spelling of a phone."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riskguard.crypto._blind import BlindIndex, CompoundIndex, derive_index_key
from riskguard.crypto._normalise import last_digits
from riskguard.errors import ConfigError, InvalidValue, KeyManagementError
from tests.crypto.test_normalise import SPELLINGS
from tests.crypto.test_normalise import full_width as to_full_width

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "blind_index.json").read_text(encoding="utf-8")
)
ROOT = bytes(range(32))
KEY = derive_index_key(ROOT, table="customer", column="phone", index="phone_idx")
CANONICAL = "+8613800138000"


# -- independent reference implementation ------------------------------------------------


def _ref_hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with SHA-256 and no salt (HashLen zero bytes)."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def _ref_key(v: dict[str, Any]) -> bytes:
    def lp(s: str) -> bytes:
        b = s.encode("utf-8")
        return len(b).to_bytes(4, "big") + b

    info = (
        b"riskguard/blind-index-key"
        + lp(v["table"])
        + lp(v["column"])
        + lp(v["index"])
        + v["version"].to_bytes(4, "big")
    )
    return _ref_hkdf(bytes.fromhex(v["root"]), info)


def _ref_value(key: bytes, message: bytes, bits: int) -> str:
    mac = int.from_bytes(hmac.new(key, message, hashlib.sha256).digest(), "big")
    chars = math.ceil(bits / 4)
    return format((mac >> (256 - bits)) << (4 * chars - bits), f"0{chars}x")


def _key_of(v: dict[str, Any]) -> bytes:
    return derive_index_key(
        bytes.fromhex(v["root"]),
        table=v["table"],
        column=v["column"],
        index=v["index"],
        version=v["version"],
    )


# -- vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "v", VECTORS["blind"], ids=lambda v: f"{v['index']}-v{v['version']}-{v['bits']}"
)
def test_blind_vectors(v: dict[str, Any]) -> None:
    key = bytes.fromhex(v["key"])
    assert _ref_key(v) == key
    assert _key_of(v) == key
    assert _ref_value(key, v["input"].encode(), v["bits"]) == v["value"]
    idx = BlindIndex(key, name=v["index"], normaliser="exact", bits=v["bits"])
    assert idx.compute_normalised(v["input"]) == v["value"]
    assert idx.compute(v["input"]) == v["value"]
    assert len(v["value"]) == idx.hex_chars == math.ceil(v["bits"] / 4)


@pytest.mark.parametrize("v", VECTORS["compound"], ids=lambda v: f"{v['index']}-{v['parts']}")
def test_compound_vectors(v: dict[str, Any]) -> None:
    key = bytes.fromhex(v["key"])
    assert _ref_key(v) == key == _key_of(v)
    message = b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in v["parts"])
    assert _ref_value(key, message, v["bits"]) == v["value"]
    fields = [f"f{n}" for n in range(len(v["parts"]))]
    idx = CompoundIndex(key, name=v["index"], parts=[(f, "exact") for f in fields], bits=v["bits"])
    assert idx.compute(dict(zip(fields, v["parts"], strict=True))) == v["value"]


def test_vectors_cover_the_edges() -> None:
    bits = {v["bits"] for v in VECTORS["blind"]}
    assert {1, 256} <= bits and any(b % 4 for b in bits) and any(b % 8 == 4 for b in bits)
    assert any(not v["table"].isascii() for v in VECTORS["blind"])
    assert any(v["version"] > 1 for v in VECTORS["blind"])


# -- keys ----------------------------------------------------------------------------------

BASE: dict[str, Any] = {"table": "customer", "column": "phone", "index": "phone_idx", "version": 1}


@pytest.mark.parametrize(
    "change",
    [
        {"table": "rider"},
        {"column": "phone2"},
        {"index": "phone_idx2"},
        {"version": 2},
        {"table": "customerphone", "column": ""},
    ],
)
def test_every_coordinate_changes_the_key(change: dict[str, Any]) -> None:
    args = {**BASE, **change}
    if args["column"] == "":
        # Length prefixes: ("customer", "phone") and ("customerphone", ...) never collide.
        args = {**args, "table": "custom", "column": "erphone"}
    assert derive_index_key(ROOT, **args) != derive_index_key(ROOT, **BASE)


def test_key_is_deterministic_and_root_bound() -> None:
    assert derive_index_key(ROOT, **BASE) == KEY
    assert derive_index_key(bytes(32), **BASE) != KEY
    assert len(KEY) == 32


def test_boundaries_between_names_are_unambiguous() -> None:
    a = derive_index_key(ROOT, table="ab", column="c", index="d")
    b = derive_index_key(ROOT, table="a", column="bc", index="d")
    assert a != b


@pytest.mark.parametrize("root", [b"", b"x" * 31, "k" * 32])
def test_short_root(root: Any) -> None:
    with pytest.raises(KeyManagementError):
        derive_index_key(root, **BASE)


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 0},
        {"version": 2**32},
        {"version": True},
        {"version": "1"},
        {"table": ""},
        {"column": None},
        {"index": ""},
    ],
)
def test_bad_key_coordinates(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        derive_index_key(ROOT, **{**BASE, **bad})


def test_largest_version() -> None:
    assert derive_index_key(ROOT, **{**BASE, "version": 2**32 - 1}) != KEY


# -- BlindIndex ----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8, 9, 12, 22, 31, 32, 63, 64, 255, 256])
def test_truncation_matches_the_reference(bits: int) -> None:
    idx = BlindIndex(KEY, name="p", normaliser="phone", bits=bits)
    value = idx.compute_normalised(CANONICAL)
    assert value == _ref_value(KEY, CANONICAL.encode(), bits)
    assert len(value) == idx.hex_chars == math.ceil(bits / 4)
    assert value == value.lower()
    spare = 4 * idx.hex_chars - bits
    assert int(value, 16) & ((1 << spare) - 1) == 0


def test_every_size_is_a_prefix_of_the_full_mac() -> None:
    full = BlindIndex(KEY, name="p", normaliser="phone", bits=256).compute(CANONICAL)
    for bits in range(4, 257, 4):
        assert (
            BlindIndex(KEY, name="p", normaliser="phone", bits=bits).compute(CANONICAL)
            == (full[: bits // 4])
        )


@pytest.mark.parametrize("bits", [0, 257, -8, 16.0, True, "16", None])
def test_bad_bits(bits: Any) -> None:
    with pytest.raises(ConfigError):
        BlindIndex(KEY, name="p", normaliser="phone", bits=bits)


def test_short_key_and_bad_normaliser() -> None:
    with pytest.raises(KeyManagementError):
        BlindIndex(b"short", name="p", normaliser="phone", bits=16)
    with pytest.raises(ConfigError):
        BlindIndex(KEY, name="p", normaliser="soundex", bits=16)
    with pytest.raises(ConfigError):
        BlindIndex(KEY, name="p", normaliser=42, bits=16)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        BlindIndex(KEY, name="p", normaliser="phone", bits=16, region="XX")


def test_callable_normaliser_and_repr() -> None:
    idx = BlindIndex(KEY, name="code", normaliser=str.upper, bits=32)
    assert idx.compute("ab") == idx.compute_normalised("AB")
    assert repr(idx) == "BlindIndex(name='code', bits=32)"
    assert KEY.hex() not in repr(idx)


def test_deterministic_and_key_separated() -> None:
    a = BlindIndex(KEY, name="p", normaliser="phone", bits=64)
    other = derive_index_key(ROOT, **{**BASE, "version": 2})
    b = BlindIndex(other, name="p", normaliser="phone", bits=64)
    assert a.compute("13800138000") == a.compute("13800138000")
    assert a.compute("13800138000") != b.compute("13800138000")
    assert a.compute("13800138000") != a.compute("13900139000")


def test_invalid_value_is_reported_without_it() -> None:
    idx = BlindIndex(KEY, name="p", normaliser="phone", bits=24)
    with pytest.raises(InvalidValue) as err:
        idx.compute("+86 138 0013 800")
    assert err.value.check == "invalid" and "800" not in str(err.value)


def test_search_finds_the_row_for_every_spelling() -> None:
    """The acceptance criterion: a table indexed at write time is searched by any spelling."""
    idx = BlindIndex(KEY, name="phone_idx", normaliser="phone", bits=22)
    rows = {1: "13800138000", 2: "+86 139 0013 9000", 3: "0086 186 1234 5678", 4: "15912345678"}
    table: dict[str, set[int]] = {}
    for row_id, phone in rows.items():
        table.setdefault(idx.compute(phone), set()).add(row_id)
    for spelling in SPELLINGS:
        assert 1 in table[idx.compute(spelling)]


# -- hypothesis: equivalent spellings, same index ----------------------------------------------

mobiles = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["138", "139", "150", "186", "199", "177", "166", "147"]),
    st.from_regex(r"\A[0-9]{8}\Z", fullmatch=True),
)


@given(
    mobiles,
    st.sampled_from(["", "+86", "+86 ", "0086", "0086 ", "(+86)", "86 ", "+86-"]),
    st.sampled_from(["", " ", "-", "."]),
    st.booleans(),
)
def test_equivalent_spellings_give_one_index(
    nsn: str, prefix: str, sep: str, full_width: bool
) -> None:
    idx = BlindIndex(KEY, name="p", normaliser="phone", bits=24)
    spelled = prefix + sep.join((nsn[:3], nsn[3:7], nsn[7:]))
    if full_width:
        spelled = to_full_width(spelled)
    assert idx.compute(spelled) == idx.compute_normalised("+86" + nsn)


# -- CompoundIndex -------------------------------------------------------------------------

CKEY = derive_index_key(ROOT, table="customer", column="phone", index="phone4_city")


def _compound(bits: int = 22) -> CompoundIndex:
    return CompoundIndex(
        CKEY, name="phone4_city", parts=[("phone", last_digits(4)), ("city", "address")], bits=bits
    )


def test_compound_last4_and_city() -> None:
    idx = _compound()
    a = idx.compute(phone="13800138000", city="北京市")
    assert a == idx.compute({"phone": "+86 138-0013-8000", "city": " 北京市 "})
    assert a == idx.compute({"phone": "0086 138 0013 8000"}, city="北京市")
    assert a != idx.compute(phone="13800138001", city="北京市")
    assert a != idx.compute(phone="13800138000", city="上海市")
    message = b"\x00\x00\x00\x048000" + b"\x00\x00\x00\x09" + "北京市".encode()
    assert a == _ref_value(CKEY, message, 22)
    assert idx.fields == ("phone", "city") and len(a) == idx.hex_chars == 6
    assert repr(idx) == "CompoundIndex(name='phone4_city', fields=('phone', 'city'), bits=22)"


def test_compound_parts_are_length_prefixed() -> None:
    idx = CompoundIndex(CKEY, name="c", parts=[("a", "exact"), ("b", "exact")], bits=64)
    assert idx.compute(a="ab", b="c") != idx.compute(a="a", b="bc")
    assert idx.compute(a="", b="x") != idx.compute(a="x", b="")


def test_compound_missing_and_unknown_fields() -> None:
    idx = _compound()
    with pytest.raises(InvalidValue) as err:
        idx.compute(phone="13800138000")
    assert (err.value.kind, err.value.check) == ("compound", "missing") and "city" in str(err.value)
    with pytest.raises(InvalidValue) as err:
        idx.compute(phone="13800138000", city="北京市", town="x")
    assert err.value.check == "unknown" and "town" in str(err.value)
    with pytest.raises(InvalidValue) as err:
        idx.compute(phone="12", city="北京市")
    assert err.value.check == "length"


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [("a", "exact"), ("a", "lower")],
        [("", "exact")],
        [("a",)],
        ["a"],
        [("a", "soundex")],
    ],
)
def test_compound_bad_parts(parts: Any) -> None:
    with pytest.raises(ConfigError):
        CompoundIndex(CKEY, name="c", parts=parts, bits=16)


def test_compound_bad_bits_and_key() -> None:
    with pytest.raises(ConfigError):
        CompoundIndex(CKEY, name="c", parts=[("a", "exact")], bits=0)
    with pytest.raises(KeyManagementError):
        CompoundIndex(b"", name="c", parts=[("a", "exact")], bits=16)
