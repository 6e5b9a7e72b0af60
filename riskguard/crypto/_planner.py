"""How many bits a blind index should keep: CipherSweet's planning rule.

A blind index that keeps too many bits identifies rows (an attacker with the table learns
which rows share a value, and a short index on a few rows is as good as the value); one that
keeps too few makes every search return a large part of the table. CipherSweet's guidance
(paragonie/ciphersweet, ``src/Planner/FieldIndexPlanner.php`` and the "Blind Index Planning"
page of its documentation) measures this with the *coincidence count*

    C = R / 2 ** (sum over every index on the plaintext of min(L_i, K_i))

where ``R`` is the number of rows, ``L_i`` an index's size in bits and ``K_i`` the entropy of
its input in bits (``log2`` of the number of distinct inputs; unbounded for a full value). A
size is **safe** when ``2 <= C < sqrt(R)``: at least two rows share each index value (the
index alone never singles out a row), and fewer than ``sqrt(R)`` do (a search narrows the
table enough to be worth having).

What :func:`plan_bits` does, and where it departs from ``FieldIndexPlanner::recommend()``:

- ``max_bits`` is the largest size with ``C >= 2``. CipherSweet's ``max`` is the *smallest*
  size with ``C <= 2`` (``ceil`` where this is ``floor`` of ``log2(R) - 1``), which leaves
  ``1 < C < 2`` when ``R`` is not a power of two; riskguard keeps ``C >= 2`` as the rule
  reads. The two agree when ``log2(R)`` is an integer.
- ``min_bits`` is the smallest size with ``C < sqrt(R)`` (CipherSweet: ``C <= sqrt(R)``;
  they differ only at exact powers of two).
- The chosen size is ``max_bits``: the largest safe size has the fewest false positives.
- **Low-entropy input** (``input_bits``, e.g. ``log2(10**4)`` for the last four digits of a
  phone): an index cannot have fewer coincidences than its input space allows, so a size is
  counted as ``min(bits, input_bits)`` (CipherSweet's ``min(L, K)``). Every size from
  ``ceil(input_bits)`` up has the same ``C``, so ``max_bits`` is capped at
  ``ceil(input_bits)``: more bits cost storage and add nothing. When even the full input
  leaves ``C >= sqrt(R)`` no size is useful; CipherSweet then reports ``min = 1``, riskguard
  reports ``safe=False`` and ``min_bits=None`` with the reason.
- **Other indexes** on the same plaintext (``other_index_bits``) are counted at their full
  size (CipherSweet's ``K = ∞`` for existing indexes): that overstates what they reveal, so
  the new index is planned conservatively. All indexes on a value share one budget of about
  ``log2(R) - 1`` bits.
- CipherSweet refuses ``R < 16`` and a range with no safe upper bound by throwing;
  :func:`plan_bits` returns ``safe=False`` with a reason instead, and :func:`check_bits`
  emits :class:`UnsafeBlindIndexWarning`.

Sizes for typical O2O tables (``docs/blind-index-sizes.md`` holds the same table; a test
recomputes both from :func:`plan_bits`). *Phone*: a full phone number, no other index.
*Last 4 + city*: a compound index of the phone's last four digits and the city,
``input_bits = log2(10**4 * 337)`` (337 prefecture-level divisions and municipalities), no
other index:

| rows | phone: bits | C | safe range | column | last 4 + city: bits | C | safe range | column |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| 10^4 | 12 | 2.44 | 7-12 | String(3) | 12 | 2.44 | 7-12 | String(3) |
| 10^5 | 15 | 3.05 | 9-15 | String(4) | 15 | 3.05 | 9-15 | String(4) |
| 10^6 | 18 | 3.81 | 10-18 | String(5) | 18 | 3.81 | 10-18 | String(5) |
| 10^7 | 22 | 2.38 | 12-22 | String(6) | 22 | 2.97 | 12-22 | String(6) |
| 10^8 | 25 | 2.98 | 14-25 | String(7) | 22 | 29.67 | 14-22 | String(6) |
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from riskguard.errors import ConfigError

__all__ = [
    "CN_CITY_INPUT_BITS",
    "LAST4_INPUT_BITS",
    "IndexPlan",
    "UnsafeBlindIndexWarning",
    "check_bits",
    "coincidences",
    "plan_bits",
]

#: Entropy of the last four digits of a number: ``log2(10**4)``.
LAST4_INPUT_BITS: Final = math.log2(10**4)
#: Entropy of a Chinese city if all were equally likely: ``log2(337)`` (333 prefecture-level
#: divisions and the 4 municipalities). Real cities are far from uniform, so this is an upper
#: bound, which errs towards fewer coincidences (the conservative side).
CN_CITY_INPUT_BITS: Final = math.log2(337)

_MAX_BITS: Final = 256


class UnsafeBlindIndexWarning(UserWarning):
    """A blind index size outside CipherSweet's safe range ``2 <= C < sqrt(R)``."""


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """A blind index size and what it means for a table of ``rows`` rows.

    ``min_bits``-``max_bits`` is the safe range (``None``: that bound cannot be met);
    ``coincidences`` is ``C`` for ``bits``; ``safe`` is ``2 <= C < sqrt(rows)``; ``reason``
    says why, for people.
    """

    rows: int
    bits: int
    min_bits: int | None
    max_bits: int | None
    coincidences: float
    safe: bool
    reason: str
    other_index_bits: tuple[int, ...] = ()
    input_bits: float | None = None

    @property
    def hex_chars(self) -> int:
        """The stored index's length: the column is ``String(hex_chars)``."""
        return -(-self.bits // 4)


def coincidences(
    rows: int, bits: int, *, other_index_bits: Sequence[int] = (), input_bits: float | None = None
) -> float:
    """``C = rows / 2 ** (sum(other_index_bits) + min(bits, input_bits))``.

    :raises ConfigError: a size outside 1-256, ``rows < 1`` or ``input_bits <= 0``.
    """
    other, k = _check_inputs(rows, other_index_bits, input_bits)
    return _c(rows, _check_size(bits), other, k)


def plan_bits(
    rows: int, *, other_index_bits: Sequence[int] = (), input_bits: float | None = None
) -> IndexPlan:
    """The largest safe size for a new blind index on a table of ``rows`` rows.

    Never warns: a plan with ``safe=False`` (no size is safe) carries the reason, and its
    ``bits`` is the largest size with ``C >= 2`` (1 when there is none).

    :param other_index_bits: sizes of the other blind indexes on the same plaintext.
    :param input_bits: entropy of the indexed input in bits, when it is small (last digits,
        a city); ``None`` for a full value.
    :raises ConfigError: ``rows < 1``, an index size outside 1-256, ``input_bits <= 0``.
    """
    other, k = _check_inputs(rows, other_index_bits, input_bits)
    lo, hi = _bounds(rows, other, k)
    return _plan(rows, hi if hi is not None else 1, lo, hi, other, k, chosen=True)


def check_bits(
    bits: int,
    rows: int,
    *,
    other_index_bits: Sequence[int] = (),
    input_bits: float | None = None,
) -> IndexPlan:
    """The plan for a size someone chose; emits :class:`UnsafeBlindIndexWarning` (with the
    plan's reason) when it is not safe.

    :raises ConfigError: as :func:`plan_bits`, or ``bits`` outside 1-256.
    """
    other, k = _check_inputs(rows, other_index_bits, input_bits)
    lo, hi = _bounds(rows, other, k)
    plan = _plan(rows, _check_size(bits), lo, hi, other, k, chosen=False)
    if not plan.safe:
        warnings.warn(UnsafeBlindIndexWarning(plan.reason), stacklevel=2)
    return plan


# -- internals ---------------------------------------------------------------------------------


def _check_size(bits: int) -> int:
    if type(bits) is not int or not 1 <= bits <= _MAX_BITS:
        raise ConfigError(f"a blind index has 1 to {_MAX_BITS} bits, not {bits!r}")
    return bits


def _check_inputs(
    rows: int, other_index_bits: Sequence[int], input_bits: float | None
) -> tuple[tuple[int, ...], float | None]:
    if type(rows) is not int or rows < 1:
        raise ConfigError(f"the expected number of rows is a positive int, not {rows!r}")
    other = tuple(_check_size(b) for b in other_index_bits)
    if input_bits is not None and (
        not isinstance(input_bits, int | float) or not math.isfinite(input_bits) or input_bits <= 0
    ):
        raise ConfigError(f"input_bits is a positive number of bits, not {input_bits!r}")
    return other, None if input_bits is None else float(input_bits)


def _n_bits(n: int) -> str:
    return "1 bit" if n == 1 else f"{n} bits"


def _c(rows: int, bits: int, other: tuple[int, ...], k: float | None) -> float:
    effective = bits if k is None else min(bits, k)
    return rows / 2.0 ** (sum(other) + effective)


def _private(c: float) -> bool:
    return c >= 2.0


def _useful(c: float, rows: int) -> bool:
    return c * c < rows  # C < sqrt(R), without rounding sqrt


def _bounds(rows: int, other: tuple[int, ...], k: float | None) -> tuple[int | None, int | None]:
    """(smallest size with C < sqrt(R), largest size with C >= 2 capped at ceil(k))."""
    # C only falls as bits grow, so both sets are intervals; 256 sizes is a cheap scan.
    sizes = range(1, _MAX_BITS + 1)
    private = [b for b in sizes if _private(_c(rows, b, other, k))]
    useful = [b for b in sizes if _useful(_c(rows, b, other, k), rows)]
    hi = private[-1] if private else None
    if hi is not None and k is not None:
        hi = min(hi, max(1, math.ceil(k)))
    return (useful[0] if useful else None), hi


def _plan(
    rows: int,
    bits: int,
    lo: int | None,
    hi: int | None,
    other: tuple[int, ...],
    k: float | None,
    *,
    chosen: bool,
) -> IndexPlan:
    c = _c(rows, bits, other, k)
    safe = _private(c) and _useful(c, rows)
    root = math.sqrt(rows)
    rng = f"{lo}-{hi} bits" if lo is not None and hi is not None and lo <= hi else "none"
    used = f" (other indexes on this value already use {sum(other)} bits)" if other else ""
    if hi is None and other:
        reason = (
            f"no room for this index: the other indexes on this value already use {sum(other)} "
            f"bits, and even 1 more bit leaves C = {c:.2f} < 2 rows per index value"
        )
    elif hi is None:
        reason = (
            f"too few rows ({rows}) for a blind index: even 1 bit leaves C = {c:.2f} < 2 rows "
            "per index value, so the index would single out rows"
        )
    elif lo is None:
        reason = (
            f"the input has only {k:.1f} bits: every size leaves C = {c:.1f} >= sqrt(R) = "
            f"{root:.0f} rows per index value, so searches return too much of the table"
        )
    elif lo > hi:
        reason = (
            f"no size is safe for {rows} rows{used}: more than {_n_bits(hi)} leaves C < 2 and "
            f"fewer than {_n_bits(lo)} leaves C >= sqrt(R) = {root:.1f}"
        )
    elif not _private(c):
        reason = (
            f"{bits} bits leaves C = {c:.2f} < 2 rows per index value{used}: the index "
            f"singles out rows; use at most {hi} bits (safe range {rng})"
        )
    elif not _useful(c, rows):
        reason = (
            f"{bits} bits leaves C = {c:.1f} >= sqrt(R) = {root:.1f} rows per index value: "
            f"searches return too much of the table; use at least {lo} bits (safe range {rng})"
        )
    else:
        what = "the largest safe size" if chosen else "safe"
        reason = f"{bits} bits is {what}: C = {c:.2f} rows per index value (safe range {rng})"
        if k is not None and bits > math.ceil(k):
            reason += f"; the input has only {k:.1f} bits, so bits past {math.ceil(k)} add nothing"
    return IndexPlan(rows, bits, lo, hi, c, safe, reason, other, k)
