"""The blind-index planner: CipherSweet's 2 <= C < sqrt(R) rule, warnings, low-entropy
inputs, and the documented size table (which must match what the planner says)."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from riskguard.crypto import _planner
from riskguard.crypto._planner import (
    CN_CITY_INPUT_BITS,
    LAST4_INPUT_BITS,
    IndexPlan,
    UnsafeBlindIndexWarning,
    check_bits,
    coincidences,
    plan_bits,
)
from riskguard.errors import ConfigError

DOC = Path(__file__).parents[2] / "docs" / "blind-index-sizes.md"
COMPOUND_BITS = LAST4_INPUT_BITS + CN_CITY_INPUT_BITS


def _c(rows: int, bits: int, other: tuple[int, ...] = (), k: float | None = None) -> float:
    return rows / 2 ** (sum(other) + (bits if k is None else min(bits, k)))


def _safe(rows: int, c: float) -> bool:
    return 2 <= c < math.sqrt(rows)


@pytest.mark.parametrize(
    "rows,other,k",
    [
        (10**4, (), None),
        (50_000, (4,), None),
        (1 << 16, (), None),
        (1 << 16, (4, 4), None),
        (10**6, (), COMPOUND_BITS),
        (10**7, (8,), None),
        (10**8, (), COMPOUND_BITS),
        ((1 << 31) - 1, (), 17),
        (10**9, (), None),
    ],
)
def test_plan_is_the_largest_safe_size(rows: int, other: tuple[int, ...], k: Any) -> None:
    plan = plan_bits(rows, other_index_bits=other, input_bits=k)
    safe = [b for b in range(1, 257) if _safe(rows, _c(rows, b, other, k))]
    assert safe, "every case here has a safe size"
    cap = 256 if k is None else math.ceil(k)
    assert plan.safe
    assert plan.bits == plan.max_bits == min(max(safe), cap)
    assert plan.min_bits == min(safe)
    assert plan.coincidences == pytest.approx(_c(rows, plan.bits, other, k))
    assert 2 <= plan.coincidences < math.sqrt(rows)
    # One more bit would break C >= 2 (unless the input's entropy already caps it).
    if k is None or plan.bits < k:
        assert _c(rows, plan.bits + 1, other, k) < 2


@pytest.mark.parametrize("rows", [16, 17, 100, 1000, 12345, 10**6, 2**40 + 1])
@pytest.mark.parametrize("bits", [1, 4, 8, 12, 16, 20, 24, 32, 64])
def test_check_bits_applies_the_rule(rows: int, bits: int) -> None:
    c = _c(rows, bits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = check_bits(bits, rows)
    assert plan.safe == _safe(rows, c)
    assert plan.coincidences == pytest.approx(c)
    assert plan.bits == bits
    assert [w.category for w in caught] == ([] if plan.safe else [UnsafeBlindIndexWarning])


def test_agrees_with_ciphersweet_where_the_rule_does() -> None:
    """paragonie/ciphersweet tests/Planner/FieldIndexPlannerTest.php, with the documented
    differences: C >= 2 exactly (CipherSweet's max may leave 1 < C < 2) and C < sqrt(R)."""
    p = plan_bits(1 << 31)
    assert (p.min_bits, p.max_bits) == (16, 30)  # CipherSweet: min 16, max 30
    p = plan_bits(1 << 16, other_index_bits=(4, 4))
    assert (p.min_bits, p.max_bits) == (1, 7)  # CipherSweet: min 1, max 7
    p = plan_bits(1 << 16)
    assert (p.min_bits, p.max_bits) == (9, 15)  # CipherSweet: 8 (C = sqrt(R) allowed), 15
    p = plan_bits((1 << 31) - 1)
    assert p.max_bits == 29 and p.coincidences >= 2  # CipherSweet: 30, where C = 1.99…
    p = plan_bits((1 << 31) - 1, input_bits=17)
    assert (p.min_bits, p.max_bits) == (16, 17)  # CipherSweet: recommend(17) = 16, 17
    p = plan_bits(1 << 31, input_bits=8)
    assert p.max_bits == 8 and p.min_bits is None and not p.safe  # CipherSweet: 1, 8


def test_low_entropy_input() -> None:
    # Last four digits alone over 10^8 rows: C = 10^4 = sqrt(R) whatever the size.
    plan = plan_bits(10**8, input_bits=LAST4_INPUT_BITS)
    assert not plan.safe and plan.min_bits is None and plan.max_bits == plan.bits == 14
    assert "only 13.3 bits" in plan.reason
    # A size past the input's entropy is safe but wasted, and says so.
    plan = check_bits(40, 10**8, input_bits=COMPOUND_BITS)
    assert plan.safe and plan.coincidences == pytest.approx(10**8 / 2**COMPOUND_BITS)
    assert "add nothing" in plan.reason
    assert coincidences(10**8, 40, input_bits=COMPOUND_BITS) == plan.coincidences


def test_no_safe_size() -> None:
    tiny = plan_bits(3)
    assert not tiny.safe and tiny.max_bits is None and tiny.bits == 1
    assert "too few rows" in tiny.reason
    four = plan_bits(4)
    assert not four.safe and (four.min_bits, four.max_bits) == (2, 1)
    assert "no size is safe" in four.reason and "1 bit " in four.reason
    full = plan_bits(10**6, other_index_bits=(18,))
    assert not full.safe and "no room" in full.reason and "18 bits" in full.reason
    with pytest.warns(UnsafeBlindIndexWarning, match="too few rows"):
        check_bits(1, 3)


def test_unsafe_sizes_warn_with_the_reason() -> None:
    with pytest.warns(UnsafeBlindIndexWarning, match=r"singles out rows; use at most 18 bits"):
        plan = check_bits(24, 10**6)
    assert not plan.safe and plan.coincidences < 2
    with pytest.warns(UnsafeBlindIndexWarning, match=r"too much of the table; use at least 10"):
        plan = check_bits(6, 10**6)
    assert not plan.safe
    assert issubclass(UnsafeBlindIndexWarning, UserWarning)


def test_safe_size_does_not_warn() -> None:
    # pytest runs with filterwarnings=error: a warning here would fail the test.
    plan = check_bits(18, 10**6)
    assert plan.safe and plan.reason.startswith("18 bits is safe")
    assert plan_bits(10**6).reason.startswith("18 bits is the largest safe size")


def test_plan_reports_its_column() -> None:
    assert plan_bits(10**6).hex_chars == 5
    assert IndexPlan(1, 256, None, None, 0.0, False, "").hex_chars == 64


@pytest.mark.parametrize(
    "call",
    [
        lambda: plan_bits(0),
        lambda: plan_bits(10.5),  # type: ignore[arg-type]
        lambda: plan_bits(100, other_index_bits=(0,)),
        lambda: plan_bits(100, other_index_bits=(300,)),
        lambda: plan_bits(100, input_bits=0),
        lambda: plan_bits(100, input_bits=-3),
        lambda: plan_bits(100, input_bits=float("nan")),
        lambda: plan_bits(100, input_bits="8"),  # type: ignore[arg-type]
        lambda: check_bits(0, 100),
        lambda: check_bits(257, 100),
        lambda: coincidences(100, True),
    ],
)
def test_bad_arguments(call: Any) -> None:
    with pytest.raises(ConfigError):
        call()


# -- the documented table -------------------------------------------------------------------

HEADER = (
    "| rows | phone: bits | C | safe range | column "
    "| last 4 + city: bits | C | safe range | column |"
)


def _cells(plan: IndexPlan) -> str:
    return (
        f"{plan.bits} | {plan.coincidences:.2f} | {plan.min_bits}-{plan.max_bits} "
        f"| String({plan.hex_chars})"
    )


def _table() -> list[str]:
    lines = [HEADER, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in range(4, 9):
        phone = plan_bits(10**e)
        compound = plan_bits(10**e, input_bits=COMPOUND_BITS)
        assert phone.safe and compound.safe
        lines.append(f"| 10^{e} | {_cells(phone)} | {_cells(compound)} |")
    return lines


def test_docs_table_matches_the_planner() -> None:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- sizes:begin -->\n(.*?)\n<!-- sizes:end -->", text, re.S)
    assert m, "docs/blind-index-sizes.md lost its sizes markers"
    assert m.group(1).splitlines() == _table()


def test_docstring_table_matches_the_planner() -> None:
    doc = _planner.__doc__ or ""
    lines = [line for line in doc.splitlines() if line.startswith("|")]
    assert lines == _table()


def test_docs_example_for_two_indexes() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "other_index_bits=[10]" in text and "-> 8 bits" in text
    assert plan_bits(10**6, other_index_bits=[10], input_bits=COMPOUND_BITS).bits == 8
    assert "18 bits for 10^6 rows" in text and plan_bits(10**6).bits == 18
    assert not plan_bits(10**6, other_index_bits=[18], input_bits=COMPOUND_BITS).safe
