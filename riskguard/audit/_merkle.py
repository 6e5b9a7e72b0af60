"""The Merkle tree of RFC 6962 / RFC 9162 over audit event hashes.

Leaf ``i`` (0-based; event ``seq = i + 1``) is the event's 32-byte chain hash;
``leaf_hash = SHA-256(0x00 || event hash)``, ``node_hash = SHA-256(0x01 || left || right)``,
the root of the empty tree is ``SHA-256("")``.

Perfect subtrees are named ``(level, index)``: the ``2**level`` leaves from
``index * 2**level``. Proof builders take a ``perfect(level, index) -> bytes`` callable, so
that a store can answer from the nodes it keeps instead of rereading every leaf.

Proof verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 word for word.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "EMPTY_ROOT",
    "ConsistencyProof",
    "Frontier",
    "InclusionProof",
    "PerfectHash",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "mth",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()

PerfectHash = Callable[[int, int], bytes]
_T = TypeVar("_T")

_sha = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash of ``data`` (an event's 32-byte chain hash)."""
    return _sha(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return _sha(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right edge of a growing tree: one perfect-subtree hash per set bit of ``size``.

    It gives the root at any size in O(log n) memory, which is what lets verification
    stream a log of any length, and it reports each perfect subtree as it completes.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError("frontier does not match its size")

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the perfect subtrees ``(level, index, hash)`` it completed
        (the leaf itself at level 0 first)."""
        index = self.size
        done = [(0, index, leaf)]
        h = leaf
        level = 0
        while (index >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            done.append((level, index >> level, h))
        self.hashes.append(h)
        self.size += 1
        return done

    def add(self, leaf: bytes) -> None:
        """:meth:`append` without the report (the verifier's hot loop)."""
        h = leaf
        n = self.size
        hashes = self.hashes
        while n & 1:
            h = node_hash(hashes.pop(), h)
            n >>= 1
        hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        """The Merkle tree hash of the leaves so far."""
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def nodes(self) -> list[tuple[int, int, bytes]]:
        """The frontier's perfect subtrees as ``(level, index, hash)``, left to right."""
        out = []
        start = 0
        i = 0
        for level in range(self.size.bit_length() - 1, -1, -1):
            if self.size >> level & 1:
                out.append((level, start >> level, self.hashes[i]))
                start += 1 << level
                i += 1
        return out

    def to_text(self) -> str:
        """Compact text form for storage: ``size:hex,hex,…``."""
        return f"{self.size}:" + ",".join(h.hex() for h in self.hashes)

    @classmethod
    def from_text(cls, text: str) -> Frontier:
        """Parse :meth:`to_text` (strictly: only the exact text it writes).

        :raises ValueError: malformed text.
        """
        size_s, _, rest = text.partition(":")
        hashes = [bytes.fromhex(h) for h in rest.split(",")] if rest else []
        if any(len(h) != 32 for h in hashes):
            raise ValueError("frontier hashes must be 32 bytes")
        frontier = cls(int(size_s), hashes)
        # int() and bytes.fromhex() also take "00", " 0", "_", upper case and spaces; an
        # export header (which is not signed) must not change and still verify.
        if frontier.to_text() != text:
            raise ValueError("frontier text is not in canonical form")
        return frontier

    def copy(self) -> Frontier:
        """An independent copy."""
        return Frontier(self.size, self.hashes)


def root_of(leaves: Iterable[bytes]) -> bytes:
    """The root over raw leaf data (each hashed with :func:`leaf_hash`)."""
    f = Frontier()
    for data in leaves:
        f.add(leaf_hash(data))
    return f.root()


def mth(start: int, end: int, perfect: PerfectHash) -> bytes:
    """MTH of leaves ``[start, end)``, built from perfect subtrees (RFC 9162 §2.1.1)."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return perfect(level, start >> level)
    k = _split(n)
    return node_hash(mth(start, start + k, perfect), mth(start + k, end, perfect))


def inclusion_proof(index: int, size: int, perfect: PerfectHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1).

    :raises ValueError: ``index`` is outside the tree.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(mth(start + k, end, perfect))
            end = start + k
        else:
            path.append(mth(start, start + k, perfect))
            start += k
    path.reverse()
    return path


def consistency_proof(first: int, second: int, perfect: PerfectHash) -> list[bytes]:
    """The proof that the tree of ``first`` leaves is a prefix of the one of ``second``
    (RFC 9162 §2.1.4.1).

    :raises ValueError: ``first`` is not within ``0..second``.
    """
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    out: list[bytes] = []
    start, end, m, complete = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                out.append(mth(start, end, perfect))
            break
        k = _split(n)
        if m <= k:
            out.append(mth(start + k, end, perfect))
            end = start + k
        else:
            out.append(mth(start, start + k, perfect))
            start += k
            m -= k
            complete = False
    out.reverse()
    return out


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree with ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``first_root`` (size ``first``) is a prefix of the
    tree ``second_root`` (size ``second``)."""
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


def _field(obj: object, name: str, kind: type[_T]) -> _T:
    if not isinstance(obj, dict):
        raise TypeError("a proof is a JSON object")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{name} must be a {kind.__name__}")
    return value


def _path(obj: object) -> tuple[bytes, ...]:
    path = _field(obj, "path", list)
    hashes = tuple(_unb64(_field({"hash": h}, "hash", str)) for h in path)
    if len(hashes) > 64 or any(len(h) != 32 for h in hashes):
        raise ValueError("path must hold at most 64 hashes of 32 bytes")
    return hashes


@dataclass(frozen=True)
class InclusionProof:
    """That event ``seq`` (hash ``event_hash``) is in the tree of ``tree_size`` events.

    Binary form (:meth:`to_bytes`): ``u64 seq || u64 tree_size || event hash (32) ||
    u8 count || count x 32-byte hashes`` (49 + 32 per hash): at most 817 bytes (24
    hashes) for a 10-million-event log.
    """

    seq: int
    tree_size: int
    event_hash: bytes
    path: tuple[bytes, ...]

    def verify(self, root: bytes) -> bool:
        """Whether the proof holds against ``root`` (take it from a *verified* checkpoint)."""
        return verify_inclusion(
            leaf_hash(self.event_hash), self.seq - 1, self.tree_size, list(self.path), root
        )

    def to_bytes(self) -> bytes:
        """The compact binary form."""
        return (
            struct.pack(">QQ", self.seq, self.tree_size)
            + self.event_hash
            + bytes([len(self.path)])
            + b"".join(self.path)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> InclusionProof:
        """Parse :meth:`to_bytes`.

        :raises ValueError: truncated or over-long data.
        """
        if len(data) < 49:
            raise ValueError("inclusion proof is truncated")
        seq, size = struct.unpack(">QQ", data[:16])
        count = data[48]
        if len(data) != 49 + 32 * count:
            raise ValueError("inclusion proof length does not match its hash count")
        path = tuple(data[49 + 32 * i : 81 + 32 * i] for i in range(count))
        return cls(seq, size, data[16:48], path)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (hashes in standard base64)."""
        return {
            "seq": self.seq,
            "tree_size": self.tree_size,
            "event_hash": self.event_hash.hex(),
            "path": [_b64(h) for h in self.path],
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> InclusionProof:
        """Parse :meth:`to_json`.

        :raises ValueError: a field is missing or malformed.
        """
        try:
            event_hash = bytes.fromhex(_field(obj, "event_hash", str))
            if len(event_hash) != 32:
                raise ValueError("event_hash must be 32 bytes")
            return cls(
                _field(obj, "seq", int), _field(obj, "tree_size", int), event_hash, _path(obj)
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed inclusion proof: {exc}") from None


@dataclass(frozen=True)
class ConsistencyProof:
    """That the tree of ``first`` events is a prefix of the tree of ``second`` events."""

    first: int
    second: int
    path: tuple[bytes, ...]

    def verify(self, first_root: bytes, second_root: bytes) -> bool:
        """Whether the proof holds between the two (verified) roots."""
        return verify_consistency(self.first, self.second, first_root, second_root, list(self.path))

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (hashes in standard base64)."""
        return {"first": self.first, "second": self.second, "path": [_b64(h) for h in self.path]}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> ConsistencyProof:
        """Parse :meth:`to_json`.

        :raises ValueError: a field is missing or malformed.
        """
        try:
            return cls(_field(obj, "first", int), _field(obj, "second", int), _path(obj))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed consistency proof: {exc}") from None
