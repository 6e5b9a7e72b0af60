"""Masks for display and the per-field, per-role masking policy (and its file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from riskguard.crypto._mask import (
    HIDDEN,
    FieldMask,
    MaskPolicy,
    mask_address,
    mask_cn_id,
    mask_email,
    mask_name,
    mask_phone,
)
from riskguard.errors import ConfigError
from tests.crypto.test_normalise import SPELLINGS, full_width

SHIPPED = Path(__file__).parents[2] / "policies" / "masking.toml"
ID = "110101199001061234"  # a valid number ending in 1234, as in the example


# -- the masks -----------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_phone_mask_from_any_spelling(spelling: str) -> None:
    assert mask_phone(spelling) == "138****8000"


def test_phone_mask_other_numbers() -> None:
    assert mask_phone("+1 415 555 2671") == "+1 ****2671"
    assert mask_phone("+86 10 6552 9988") == "+86 ****9988"
    assert mask_phone("(415) 555-2671", region="US") == "+1 ****2671"
    with pytest.raises(ConfigError):
        mask_phone("13800138000", region="XX")


def test_id_mask() -> None:
    assert mask_cn_id(ID) == "110101**********1234"
    assert mask_cn_id("11010519491231002x") == "110105**********002X"
    assert mask_cn_id("110105491231002") == "110105**********002X"  # upgraded from 15
    assert mask_cn_id(ID).count("*") == 10


@pytest.mark.parametrize(
    "address,district,city,province",
    [
        ("北京市朝阳区建国路88号", "北京市朝阳区", "北京市", "北京市"),
        ("北京市 朝阳区 建国路 88 号", "北京市朝阳区", "北京市", "北京市"),
        ("上海市浦东新区世纪大道100号", "上海市浦东新区", "上海市", "上海市"),
        ("广东省深圳市南山区科技园路1号", "广东省深圳市南山区", "广东省深圳市", "广东省"),
        ("江苏省苏州市昆山市玉山镇", "江苏省苏州市昆山市", "江苏省苏州市", "江苏省"),
        ("山东省济南市市中区经十路", "山东省济南市市中区", "山东省济南市", "山东省"),
        (
            "新疆维吾尔自治区乌鲁木齐市天山区解放路",
            *("新疆维吾尔自治区乌鲁木齐市天山区", "新疆维吾尔自治区乌鲁木齐市", "新疆维吾尔自治区"),
        ),
        (
            "吉林省延边朝鲜族自治州延吉市",
            *("吉林省延边朝鲜族自治州延吉市", "吉林省延边朝鲜族自治州", "吉林省"),
        ),
        (
            "黑龙江省大兴安岭地区漠河市",
            *("黑龙江省大兴安岭地区漠河市", "黑龙江省大兴安岭地区", "黑龙江省"),
        ),
        (
            "内蒙古自治区锡林郭勒盟锡林浩特市",
            *("内蒙古自治区锡林郭勒盟锡林浩特市", "内蒙古自治区锡林郭勒盟", "内蒙古自治区"),
        ),
        (
            "内蒙古自治区呼伦贝尔市鄂温克族自治旗",
            *("内蒙古自治区呼伦贝尔市鄂温克族自治旗", "内蒙古自治区呼伦贝尔市", "内蒙古自治区"),
        ),
        ("湖北省神农架林区松柏镇", "湖北省神农架林区", "湖北省", "湖北省"),
        ("广东省东莞市长安镇", "广东省东莞市", "广东省东莞市", "广东省"),
        (
            "香港特别行政区中西区皇后大道",
            "香港特别行政区中西区",
            "香港特别行政区",
            "香港特别行政区",
        ),
        ("深圳市南山区科技园", "深圳市南山区", "深圳市", ""),
    ],
)
def test_address_mask_levels(address: str, district: str, city: str, province: str) -> None:
    assert mask_address(address) == district + HIDDEN
    assert mask_address(address, "city") == city + HIDDEN
    assert mask_address(address, "province") == province + HIDDEN


def test_name_and_email_masks() -> None:
    assert mask_name("张三丰") == "张**"
    assert mask_name("张三") == "张**"  # the length is not revealed
    assert mask_name("欧阳 娜娜") == "欧**"
    assert mask_name("Li Lei") == "L**"
    assert mask_email("alice@example.com") == "a***@example.com"
    assert mask_email(" Bob.Smith@Mail.Example.ORG ") == "B***@Mail.Example.ORG"
    assert mask_email("li.lei" + full_width("@") + "example.com") == "l***@example.com"


ODD = [None, 13800138000, b"13800138000", "", "   ", "garbage", "\x00\x01", "🙂" * 50]


@pytest.mark.parametrize("value", ODD)
@pytest.mark.parametrize(
    "mask", [mask_phone, mask_cn_id, mask_address, mask_email], ids=lambda f: f.__name__
)
def test_masks_never_raise_on_odd_input(mask: Any, value: Any) -> None:
    assert mask(value) == HIDDEN


@pytest.mark.parametrize(
    "mask,value",
    [
        (mask_phone, "+86 138 0013 800"),  # parses, not a valid number
        (mask_cn_id, "110101199001061235"),  # bad checksum
        (mask_cn_id, "110101199002301234"),  # no such date
        (mask_address, "123 Main St"),
        (mask_address, "建国路88号"),  # no administrative prefix
        (mask_name, "张"),
        (mask_name, None),
        (mask_email, "alice@"),
    ],
)
def test_unplaceable_values_are_hidden(mask: Any, value: Any) -> None:
    assert mask(value) == HIDDEN


def test_address_level_is_checked() -> None:
    with pytest.raises(ConfigError):
        mask_address("北京市朝阳区", "street")


# -- the policy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> MaskPolicy:
    return MaskPolicy.from_toml(SHIPPED)


def test_shipped_policy_loads(shipped: MaskPolicy) -> None:
    assert set(shipped.fields) == {
        "customer.phone",
        "customer.address",
        "customer.id_number",
        "customer.name",
    }
    roles = {"customer_service", "risk_analyst", "rider", "merchant_staff", "auditor"}
    roles |= {"platform_admin", "default"}
    text = SHIPPED.read_text(encoding="utf-8")
    for role in roles:
        assert f"\n{role} = " in text


@pytest.mark.parametrize(
    "field,role,value,shown",
    [
        ("customer.phone", "customer_service", "13800138000", "138****8000"),
        ("customer.phone", "cs_agent", "+86 138-0013-8000", "138****8000"),
        ("customer.phone", "rider", "13800138000", "13800138000"),
        ("customer.phone", "merchant_staff", "13800138000", "138****8000"),
        ("customer.phone", "nobody", "13800138000", HIDDEN),
        ("customer.address", "rider", "北京市朝阳区建国路88号", "北京市朝阳区建国路88号"),
        ("customer.address", "merchant_staff", "北京市朝阳区建国路88号", "北京市朝阳区****"),
        ("customer.address", "auditor", "广东省深圳市南山区科技园路1号", "广东省深圳市****"),
        ("customer.id_number", "auditor", ID, "110101**********1234"),
        ("customer.id_number", "rider", ID, HIDDEN),
        ("customer.name", "rider", "张三丰", "张**"),
        ("customer.phone", "platform_admin", "13800138000", "138****8000"),
    ],
)
def test_shipped_rules(shipped: MaskPolicy, field: str, role: str, value: str, shown: str) -> None:
    assert shipped.apply(field, value, role) == shown


def test_several_roles_get_the_most_revealing_rule(shipped: MaskPolicy) -> None:
    assert shipped.apply("customer.phone", "13800138000", ["auditor", "rider"]) == "13800138000"
    assert shipped.rule("customer.address", ("auditor", "merchant_staff")) == "address"
    assert shipped.rule("customer.address", ("nobody", "auditor")) == "address_city"
    assert shipped.rule("customer.phone", ()) == "hidden"


def test_apply_never_raises_on_odd_values(shipped: MaskPolicy) -> None:
    for field in shipped.fields:
        for value in ODD:
            shown = shipped.apply(field, value, "platform_admin")
            assert isinstance(shown, str)
            if not isinstance(value, str) or not value.strip():
                assert shown == HIDDEN
    assert shipped.apply("customer.phone", None, "rider") == HIDDEN


def test_unknown_field(shipped: MaskPolicy) -> None:
    with pytest.raises(ConfigError) as err:
        shipped.apply("customer.password", "x", "rider")
    assert err.value.key == "customer.password"


def test_from_mapping_flat_and_nested() -> None:
    flat = MaskPolicy.from_mapping(
        {"order.contact": {"kind": "phone", "rider": "full", "default": "mask"}}
    )
    nested = MaskPolicy.from_mapping(
        {"order": {"contact": {"kind": "phone", "rider": "full", "default": "mask"}}}
    )
    for policy in (flat, nested):
        assert policy.fields == ("order.contact",)
        assert policy.apply("order.contact", "13800138000", "rider") == "13800138000"
        assert policy.apply("order.contact", "13800138000", "anyone") == "138****8000"
    text = MaskPolicy.from_mapping({"t.note": {"kind": "text", "staff": "mask"}})
    assert text.apply("t.note", "secret", "staff") == HIDDEN
    assert text.apply("t.note", "secret", "other") == HIDDEN
    assert repr(text) == "MaskPolicy(fields=('t.note',))"
    us = MaskPolicy.from_mapping({"t.p": {"kind": "phone", "x": "mask"}}, region="US")
    assert us.apply("t.p", "(415) 555-2671", "x") == "+1 ****2671"


BASE = """\
# masking policy under test
[customer.phone]
kind = "phone"
default = "hidden"
rider = "full"

[customer.address]
kind = "address"
merchant_staff = "address_city"
"""

DEFECTS = [
    # (name, replace this, with this, the line that must be named, words in the message)
    ("unknown kind", 'kind = "address"', 'kind = "postcode"', 'kind = "postcode"', "unknown kind"),
    ("missing kind", 'kind = "phone"\n', "", "[customer.phone]", "needs a kind"),
    ("kind not str", 'kind = "phone"', "kind = 3", "kind = 3", "needs a kind"),
    ("unknown style", 'rider = "full"', 'rider = "blurred"', "rider = ", "unknown mask style"),
    (
        "style for another kind",
        'merchant_staff = "address_city"',
        'merchant_staff = "phone"',
        "merchant_staff = ",
        "does not apply to address fields",
    ),
    ("rule not str", 'rider = "full"', "rider = true", "rider = ", "must be a string"),
    ("bad toml", 'rider = "full"', 'rider = "full', "rider = ", "malformed TOML"),
    ("top-level value", "# masking", "version = 1\n# masking", None, "not a field table"),
]


@pytest.mark.parametrize("old,new,at,words", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_policy_file_errors_name_file_and_line(
    tmp_path: Path, old: str, new: str, at: str | None, words: str
) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE
    path = tmp_path / "masking.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        MaskPolicy.from_toml(path)
    assert words in err.value.message
    assert err.value.path == str(path)
    if at is not None:
        expected = next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(at))
        assert err.value.line == expected
        assert f"masking.toml:{expected}" in str(err.value)


def test_policy_errors_without_a_file() -> None:
    with pytest.raises(ConfigError) as err:
        MaskPolicy.from_mapping({"t.p": {"kind": "phone", "x": "nope"}})
    assert err.value.key == "t.p.x" and err.value.line is None
    assert err.value.hint and "mask" in err.value.hint and "phone" in err.value.hint
    with pytest.raises(ConfigError, match="at least one field"):
        MaskPolicy.from_mapping({})
    with pytest.raises(ConfigError):
        MaskPolicy.from_mapping({"t.p": {"kind": "phone"}}, region="XX")
    with pytest.raises(ConfigError):
        MaskPolicy.from_mapping({"t": {}})


@pytest.mark.parametrize(
    "field",
    [
        FieldMask("t.p", "phone", {"x": "address"}),
        FieldMask("t.p", "phone", {}, default="blurred"),
        FieldMask("t.p", "postcode", {"x": "full"}),
    ],
)
def test_policy_checks_fields_built_in_code(field: FieldMask) -> None:
    with pytest.raises(ConfigError):
        MaskPolicy([field])


def test_unreadable_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        MaskPolicy.from_toml(tmp_path / "missing.toml")
    assert err.value.path == str(tmp_path / "missing.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[t.p]\nkind = "\xff"\n')
    with pytest.raises(ConfigError):
        MaskPolicy.from_toml(bad)
