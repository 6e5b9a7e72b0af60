"""Masking personal data for display, per field and role.

- ``phone``: ``138****8000``, a CN mobile's first 3 and last 4 digits; other numbers
  ``+<country code> ****`` and the last 4.
- ``cn_id``: ``110101**********1234``, the area code and the last 4, always 10 stars (the
  mask does not reveal the length).
- ``address`` (``北京市朝阳区****``), ``address_city`` (``广东省深圳市****``),
  ``address_province`` (``广东省****``): the administrative prefix down to that level.
- ``name``: ``张**``, the first character and always 2 stars.
- ``email``: ``a***@example.com``, the first character of the local part and the domain.
- ``full`` (the value) and ``hidden`` (``****``).

**Masks never raise on odd input.** A value that is not a ``str``, does not parse (a phone, an
ID number failing its checksum) or has no recognisable structure (an address without a
province, city or district at its start) is shown as ``****``: the display layer must not
crash on a bad row, and a value the mask cannot place must not leak. Configuration mistakes
(an unknown field, style or region) do raise :class:`~riskguard.errors.ConfigError`.

A :class:`MaskPolicy` maps each field to a kind (``phone``, ``cn_id``, ``address``, ``name``,
``email``, ``text``) and each role to a rule: ``full``, ``hidden``, ``mask`` (the kind's
usual style) or a style name. ``policies/masking.toml`` is the shipped policy::

    [customer.phone]          # the field: table.column
    kind = "phone"
    default = "hidden"        # roles not listed (no default: hidden)
    rider = "full"
    customer_service = "mask"

``kind`` is reserved, ``default`` is the rule for roles not listed, every other key is a
role. A principal with several roles gets the most
revealing of their rules (roles grant, as in RBAC).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import phonenumbers

from riskguard.config import _find_line, _parse_toml
from riskguard.crypto._normalise import (
    _check_region,
    normalise_cn_id,
    normalise_email,
    normalise_phone,
)
from riskguard.errors import ConfigError, InvalidValue

__all__ = [
    "HIDDEN",
    "FieldMask",
    "MaskPolicy",
    "mask_address",
    "mask_cn_id",
    "mask_email",
    "mask_name",
    "mask_phone",
]

#: What a fully hidden value looks like.
HIDDEN: Final = "****"


def mask_phone(value: object, *, region: str = "CN") -> str:
    """``138****8000`` for a CN mobile number (any spelling :func:`normalise_phone` accepts),
    ``+<country code> ****<last 4>`` for other numbers, ``****`` for anything else.

    :raises ConfigError: ``region`` is unknown (never for the value).
    """
    _check_region(region)
    if not isinstance(value, str):
        return HIDDEN
    try:
        e164 = normalise_phone(value, region=region)
    except InvalidValue:
        return HIDDEN
    if e164.startswith("+861") and len(e164) == 14:
        return f"{e164[3:6]}****{e164[-4:]}"
    country = phonenumbers.parse(e164, None).country_code
    return f"+{country} ****{e164[-4:]}"


def mask_cn_id(value: object) -> str:
    """``110101**********1234``: area code, 10 stars, last 4; ``****`` when the value is not
    a valid resident ID number (a 15-digit one is upgraded first)."""
    if not isinstance(value, str):
        return HIDDEN
    try:
        s = normalise_cn_id(value)
    except InvalidValue:
        return HIDDEN
    return f"{s[:6]}{'*' * 10}{s[-4:]}"


def mask_name(value: object) -> str:
    """``张**``: the first character and two stars whatever the length; ``****`` for a value
    of fewer than two characters (the first character would be all of it)."""
    if not isinstance(value, str):
        return HIDDEN
    s = "".join(unicodedata.normalize("NFC", value).split())
    return f"{s[0]}**" if len(s) >= 2 else HIDDEN


def mask_email(value: object) -> str:
    """``a***@example.com``; ``****`` when the value is not ``local@domain``."""
    if not isinstance(value, str):
        return HIDDEN
    s = unicodedata.normalize("NFKC", value).strip()
    try:
        normalise_email(s)
    except InvalidValue:
        return HIDDEN
    local, _, domain = s.rpartition("@")
    return f"{local[0]}***@{domain}"


# -- addresses ---------------------------------------------------------------------------------

# Name characters: CJK, but never the street-level words an administrative name cannot
# contain, so that a match cannot run on into the street part of the address.
_ADMIN_NAME: Final = r"(?:(?![镇乡街路道巷弄号村组栋楼室])[\u3400-\u4dbf\u4e00-\u9fff])"
_PROVINCE: Final = re.compile(
    rf"(?:北京|天津|上海|重庆)市|{_ADMIN_NAME}{{2,7}}?(?:省|自治区|特别行政区)"
)
_MUNICIPALITY: Final = re.compile(r"(?:北京|天津|上海|重庆)市")
_CITY: Final = re.compile(rf"{_ADMIN_NAME}{{1,10}}?(?:自治州|地区|盟|市)")
_DISTRICT: Final = re.compile(rf"{_ADMIN_NAME}{{1,15}}?(?:市辖区|区|县|旗|市)")
_LEVELS: Final = ("province", "city", "district")


def _admin_prefix(value: str, level: str) -> str:
    """The province / city / district names at the start of ``value``, up to ``level``."""
    s = "".join(unicodedata.normalize("NFKC", value).split())
    kept = ""
    pos = 0
    m = _PROVINCE.match(s)
    if m:
        kept, pos = m.group(), m.end()
        if level == "province":
            return kept
        municipality = _MUNICIPALITY.fullmatch(kept) is not None
    else:
        if level == "province":
            return ""  # a city without its province would reveal more than asked
        municipality = False
    if not municipality:  # a municipality is its own city
        m = _CITY.match(s, pos)
        if m:
            kept, pos = kept + m.group(), m.end()
    if level == "city":
        return kept
    m = _DISTRICT.match(s, pos)
    if m:
        kept += m.group()
    return kept


def mask_address(value: object, level: str = "district") -> str:
    """The administrative prefix of a Chinese address down to ``level`` (``province``,
    ``city`` or ``district``), then ``****``: ``北京市朝阳区建国路88号`` →
    ``北京市朝阳区****``. Recognises provinces (省, 自治区, 特别行政区), the four
    municipalities (北京市, 天津市, 上海市, 重庆市), cities (市, 自治州, 地区, 盟) and
    districts (区, 县, 旗, 市辖区, county-level 市, and the 自治县 / 自治旗 they end in).
    An address with nothing recognisable at its start is ``****``; so is one without a
    province at ``level="province"`` (its city would say more than was asked).

    :raises ConfigError: unknown ``level`` (never for the value).
    """
    if level not in _LEVELS:
        raise ConfigError(f"unknown address mask level {level!r}", hint="province, city, district")
    if not isinstance(value, str):
        return HIDDEN
    return _admin_prefix(value, level) + HIDDEN


# -- policy ------------------------------------------------------------------------------------

_Mask = Callable[[object], str]


def _full(value: object) -> str:
    return value if isinstance(value, str) else HIDDEN


def _hidden(value: object) -> str:
    return HIDDEN


def _address_at(level: str) -> _Mask:
    return lambda value: mask_address(value, level)


#: kind -> the style ``mask`` stands for.
_KINDS: Final = {
    "phone": "phone",
    "cn_id": "cn_id",
    "address": "address",
    "name": "name",
    "email": "email",
    "text": "hidden",
}
#: style -> (how much it reveals, the kinds it applies to; None: every kind).
_STYLES: Final[dict[str, tuple[int, frozenset[str] | None]]] = {
    "hidden": (0, None),
    "address_province": (1, frozenset({"address"})),
    "address_city": (2, frozenset({"address"})),
    "address": (3, frozenset({"address"})),
    "phone": (3, frozenset({"phone"})),
    "cn_id": (3, frozenset({"cn_id"})),
    "name": (3, frozenset({"name"})),
    "email": (3, frozenset({"email"})),
    "full": (9, None),
}
_RESERVED: Final = frozenset({"kind"})


@dataclass(frozen=True, slots=True)
class FieldMask:
    """One field's kind and rules: ``rules`` maps role → style (``mask`` already resolved);
    ``default`` is the style for roles not listed."""

    field: str
    kind: str
    rules: Mapping[str, str]
    default: str = "hidden"


class MaskPolicy:
    """Which mask each role sees on each field.

    :param fields: the fields' rules (see :meth:`from_mapping` and :meth:`from_toml` to build
        them from the file format).
    :param region: the region phone masks assume for numbers without a country code.
    :raises ConfigError: no fields, or an unknown region.
    """

    def __init__(self, fields: Iterable[FieldMask], *, region: str = "CN") -> None:
        _check_region(region)
        self._fields = {f.field: f for f in fields}
        if not self._fields:
            raise ConfigError("a masking policy needs at least one field")
        for f in self._fields.values():
            for role, style in (*f.rules.items(), ("default", f.default)):
                fits = _STYLES[style][1] if style in _STYLES else frozenset()
                if f.kind not in _KINDS or (fits is not None and f.kind not in fits):
                    raise ConfigError(
                        f"field {f.field!r}: style {style!r} for {role!r} does not fit kind "
                        f"{f.kind!r}",
                        key=f"{f.field}.{role}",
                        hint=_style_hint(f.kind),
                    )
        self.region = region
        self._masks: dict[str, _Mask] = {
            "full": _full,
            "hidden": _hidden,
            "phone": lambda value: mask_phone(value, region=region),
            "cn_id": mask_cn_id,
            "address": _address_at("district"),
            "address_city": _address_at("city"),
            "address_province": _address_at("province"),
            "name": mask_name,
            "email": mask_email,
        }

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the policy covers (``table.column``)."""
        return tuple(self._fields)

    def rule(self, field: str, role: str | Iterable[str]) -> str:
        """The style ``role`` sees on ``field``; for several roles, the most revealing one.
        Roles without a rule get the field's ``default``.

        :raises ConfigError: the policy has no such field.
        """
        spec = self._fields.get(field)
        if spec is None:
            raise ConfigError(f"the masking policy has no field {field!r}", key=field)
        roles = (role,) if isinstance(role, str) else tuple(role)
        styles = [spec.rules[r] for r in roles if r in spec.rules] or [spec.default]
        return max(styles, key=lambda s: _STYLES[s][0])

    def apply(self, field: str, value: object, role: str | Iterable[str]) -> str:
        """``value`` as ``role`` may see it. Never raises for the value (see the module
        docstring); a ``None`` or non-``str`` value is ``****``.

        :raises ConfigError: the policy has no such field.
        """
        return self._masks[self.rule(field, role)](value)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        region: str = "CN",
        path: str | Path | None = None,
        text: str | None = None,
    ) -> MaskPolicy:
        """Build from ``{"customer.phone": {"kind": "phone", "rider": "full", ...}}`` or the
        nested form TOML gives (``{"customer": {"phone": {...}}}``). ``path`` and ``text``
        (the file and its source) let errors name the line.

        :raises ConfigError: a field without a known ``kind``, a rule that is not a string,
            an unknown style or one that does not fit the kind (with key, and line when
            ``text`` is given).
        """
        fields: list[FieldMask] = []
        for name, spec in data.items():
            if isinstance(spec, Mapping) and isinstance(spec.get("kind"), str):
                fields.append(_field(name, spec, path, text))
            elif (
                isinstance(spec, Mapping)
                and spec
                and all(isinstance(v, Mapping) for v in spec.values())
            ):
                fields.extend(_field(f"{name}.{col}", s, path, text) for col, s in spec.items())
            else:
                raise _error(
                    f"{name!r} is not a field table with a kind",
                    name,
                    None,
                    path,
                    text,
                    hint='write [table.column] with kind = "phone" (or cn_id, address…)',
                )
        return cls(fields, region=region)

    @classmethod
    def from_toml(cls, path: str | Path, *, region: str = "CN") -> MaskPolicy:
        """Load a masking policy file (``policies/masking.toml``).

        :raises ConfigError: unreadable file, bad TOML, or a bad rule (file, key and line).
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the masking policy: {exc}", path=p) from None
        return cls.from_mapping(_parse_toml(text, p), region=region, path=p, text=text)

    def __repr__(self) -> str:
        return f"MaskPolicy(fields={self.fields!r})"


def _field(
    name: str, spec: Mapping[str, Any], path: str | Path | None, text: str | None
) -> FieldMask:
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise _error(f"field {name!r} needs a kind", name, "kind", path, text, hint=_KIND_HINT)
    if kind not in _KINDS:
        raise _error(
            f"field {name!r} has an unknown kind {kind!r}",
            name,
            "kind",
            path,
            text,
            hint=_KIND_HINT,
        )
    rules: dict[str, str] = {}
    for role, raw in spec.items():
        if role in _RESERVED:
            continue
        if not isinstance(raw, str):
            raise _error(
                f"field {name!r}: the rule for {role!r} must be a string",
                name,
                role,
                path,
                text,
                hint=_style_hint(kind),
            )
        style = _KINDS[kind] if raw == "mask" else raw
        if style not in _STYLES:
            raise _error(
                f"field {name!r}: unknown mask style {raw!r} for {role!r}",
                name,
                role,
                path,
                text,
                hint=_style_hint(kind),
            )
        fits = _STYLES[style][1]
        if fits is not None and kind not in fits:
            raise _error(
                f"field {name!r}: style {raw!r} does not apply to {kind} fields",
                name,
                role,
                path,
                text,
                hint=_style_hint(kind),
            )
        rules[role] = style
    default = rules.pop("default", "hidden")
    return FieldMask(name, kind, rules, default)


_KIND_HINT: Final = "kind is one of: " + ", ".join(_KINDS)


def _style_hint(kind: str) -> str:
    own = [s for s, (_, fits) in _STYLES.items() if fits is not None and kind in fits]
    return "use full, hidden, mask" + "".join(f", {s}" for s in own)


def _error(
    message: str,
    field: str,
    key: str | None,
    path: str | Path | None,
    text: str | None,
    *,
    hint: str | None = None,
) -> ConfigError:
    loc = [field, key] if key is not None else [field]
    line = _find_line(text, loc) if text is not None else None
    return ConfigError(message, path=path, key=".".join(loc), line=line, hint=hint)
