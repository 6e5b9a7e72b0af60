"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 keys.

A checkpoint body is::

    <log id>\\n
    <tree size, decimal>\\n
    <Merkle root, standard base64>\\n
    head <chain head hash, lowercase hex>\\n
    time <RFC 3339 UTC with microseconds>\\n

followed by a blank line and one signature line per key, ``— <key name>
base64(key id || Ed25519 signature)``, where ``key id = SHA-256(name || 0x0A || 0x01 ||
public key)[:4]``. The two extension lines bind the hash chain's head and the signing time
into the signature; tlog-checkpoint readers that do not know them ignore them.

Keys rotate through a key *history*: each key has a validity window, a checkpoint is
accepted only under a key valid at the checkpoint's time, and during an overlap every key
valid at that time co-signs, so that verification never breaks at a rotation boundary.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from riskguard.audit._canonical import format_ts, parse_ts
from riskguard.errors import ConfigError

__all__ = [
    "ANY_NAME",
    "Checkpoint",
    "CheckpointError",
    "KeyHistory",
    "SignedCheckpoint",
    "SigningKey",
    "TrustedKey",
    "generate_signing_key",
    "load_signing_key",
    "parse_checkpoint",
]

_DASH = "\u2014 "
# A TrustedKey named ANY_NAME (a bare PEM public key) matches a signature under any key
# name whose signed-note key id it reproduces: the id binds name and key, and the signature
# is still checked against the key.
ANY_NAME = "*"
_NAME_RE = re.compile(r"^[^\s+]+$")
_MAX_NOTE_BYTES = 64 * 1024
_MAX_SIGS = 16


class CheckpointError(ValueError):
    """A checkpoint note is malformed (kind ``malformed``) or its signatures fail
    (``bad_signature``, ``unknown_key``)."""

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


def _key_id(name: str, raw_public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n\x01" + raw_public).digest()[:4]


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"key name {name!r} must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class TrustedKey:
    """A public key a verifier trusts, valid from ``not_before`` to ``not_after`` (inclusive;
    ``None`` is open-ended)."""

    name: str
    public_key: Ed25519PublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None

    def __post_init__(self) -> None:
        if self.name != ANY_NAME:
            _check_name(self.name)

    @property
    def key_id(self) -> bytes:
        """The 4-byte signed-note key id."""
        return _key_id(self.name, _raw_public(self.public_key))

    def valid_at(self, when: datetime) -> bool:
        """Whether the key may sign a checkpoint made at ``when``."""
        return (self.not_before is None or self.not_before <= when) and (
            self.not_after is None or when <= self.not_after
        )

    def verifier_key(self) -> str:
        """The signed-note verifier key string ``name+keyid+base64(0x01||pub)``."""
        raw = _raw_public(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+" + base64.b64encode(b"\x01" + raw).decode()

    @classmethod
    def from_verifier_key(
        cls, text: str, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> TrustedKey:
        """Parse a verifier key string.

        :raises ValueError: malformed, not Ed25519, or the key id does not match.
        """
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise ValueError("a verifier key is name+keyid+base64")
        name, kid, b64 = parts
        raw = base64.b64decode(b64, validate=True)
        if len(raw) != 33 or raw[0] != 1:
            raise ValueError("only Ed25519 (type 0x01) verifier keys are supported")
        key = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]), not_before, not_after)
        if key.key_id.hex() != kid.lower():
            raise ValueError("verifier key id does not match its name and key")
        return key

    @classmethod
    def from_pem(cls, pem: bytes, name: str = ANY_NAME, **window: datetime | None) -> TrustedKey:
        """A trusted key from a PEM public (or private) key. Without ``name`` it matches
        signatures under whatever key name they carry (the key id still has to match).

        :raises ValueError: not an Ed25519 key.
        """
        try:
            pub = serialization.load_pem_public_key(pem)
        except ValueError:
            priv = serialization.load_pem_private_key(pem, password=None)
            pub = priv.public_key()
        if not isinstance(pub, Ed25519PublicKey):
            raise ValueError("checkpoint keys must be Ed25519")
        return cls(name, pub, **window)


@dataclass(frozen=True)
class SigningKey:
    """A private checkpoint-signing key and its validity window."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)
    not_before: datetime | None = None
    not_after: datetime | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)

    def trusted(self) -> TrustedKey:
        """The matching public :class:`TrustedKey`."""
        return TrustedKey(self.name, self.private_key.public_key(), self.not_before, self.not_after)

    def valid_at(self, when: datetime) -> bool:
        """Whether this key signs checkpoints made at ``when``."""
        return self.trusted().valid_at(when)

    def public_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (store it with mode 0600)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_signing_key(name: str, **window: datetime | None) -> SigningKey:
    """A fresh Ed25519 signing key."""
    return SigningKey(name, Ed25519PrivateKey.generate(), **window)


def load_signing_key(path: Path, name: str | None = None) -> SigningKey:
    """Load an Ed25519 private key from a PEM file; the key name defaults to the file stem.

    :raises ConfigError: the file is missing, unreadable or not an Ed25519 private key.
    """
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the audit signing key: {exc.strerror}",
            path=path,
            key="audit.signing_key",
            hint="create one with `riskguard audit keygen`",
        ) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"not a PEM private key ({type(exc).__name__})", path=path, key="audit.signing_key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("the audit signing key must be Ed25519", path=path)
    return SigningKey(name or path.stem, key)


class KeyHistory:
    """Every checkpoint key a log has used, with validity windows.

    File form (TOML, paths relative to the file)::

        [[key]]
        name = "riskguard-audit-2026a"
        public_key = "riskguard-audit-2026a+1a2b3c4d+AU...="   # signed-note verifier key
        not_before = 2026-01-01T00:00:00Z
        not_after = 2027-01-31T00:00:00Z
        private_key = "audit-2026a.pem"                         # only on signing hosts
    """

    def __init__(
        self, trusted: Iterable[TrustedKey] = (), signing: Iterable[SigningKey] = ()
    ) -> None:
        self.signing = list(signing)
        self.trusted = list(trusted) + [s.trusted() for s in self.signing]

    def signers_at(self, when: datetime) -> list[SigningKey]:
        """Every signing key valid at ``when`` (all of them co-sign)."""
        return [k for k in self.signing if k.valid_at(when)]

    @classmethod
    def load(cls, path: Path) -> KeyHistory:
        """Read a key-history file.

        :raises ConfigError: malformed TOML or an invalid entry (file and entry named).
        """
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the key history: {exc.strerror}", path=path) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"malformed TOML: {exc}", path=path) from None
        trusted, signing = [], []
        for i, entry in enumerate(data.get("key", []), 1):
            where = f"key[{i}]"
            try:
                nb, na = entry.get("not_before"), entry.get("not_after")
                window = {"not_before": _aware(nb), "not_after": _aware(na)}
                tk = TrustedKey.from_verifier_key(entry["public_key"], **window)
                if tk.name != entry.get("name", tk.name):
                    raise ValueError("name does not match the public key's name")
                if "private_key" in entry:
                    sk = load_signing_key((path.parent / entry["private_key"]), tk.name)
                    if _raw_public(sk.private_key.public_key()) != _raw_public(tk.public_key):
                        raise ValueError("private_key does not match public_key")
                    signing.append(SigningKey(tk.name, sk.private_key, **window))
                else:
                    trusted.append(tk)
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"invalid key entry: {exc}", path=path, key=where) from None
        if not trusted and not signing:
            raise ConfigError("the key history lists no [[key]]", path=path)
        return cls(trusted, signing)


def _aware(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("not_before/not_after must be TOML datetimes with a timezone")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint states: the log at ``tree_size`` events had ``root`` and chain head
    ``head_hash``, as of ``time``."""

    origin: str
    tree_size: int
    root: bytes
    head_hash: str
    time: datetime

    def body(self) -> str:
        """The note text (tlog-checkpoint with riskguard's two extension lines)."""
        return (
            f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root).decode()}\n"
            f"head {self.head_hash}\ntime {format_ts(self.time)}\n"
        )

    def sign(self, keys: Sequence[SigningKey]) -> SignedCheckpoint:
        """Sign with every key in ``keys``.

        :raises ValueError: no key given.
        """
        if not keys:
            raise ValueError("no signing key is valid at the checkpoint's time")
        body = self.body()
        lines = []
        for k in keys:
            sig = k.private_key.sign(body.encode())
            kid = _key_id(k.name, _raw_public(k.private_key.public_key()))
            lines.append(f"{_DASH}{k.name} {base64.b64encode(kid + sig).decode()}\n")
        return SignedCheckpoint(self, body + "\n" + "".join(lines))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and its signed-note text."""

    checkpoint: Checkpoint
    note: str

    def signatures(self) -> list[tuple[str, bytes, bytes]]:
        """``(key name, key id, signature)`` of each signature line."""
        _, _, sigs = self.note.partition("\n\n")
        out = []
        for line in sigs.splitlines():
            name, _, b64 = line[len(_DASH) :].partition(" ")
            raw = base64.b64decode(b64, validate=True)
            out.append((name, raw[:4], raw[4:]))
        return out

    def verify(self, trusted: Sequence[TrustedKey]) -> list[str]:
        """Check the signatures against ``trusted``; return the names of the keys that signed.

        Signatures from keys that are not trusted are ignored (C2SP signed-note).

        :raises CheckpointError: a trusted key's signature fails (``bad_signature``), or no
            trusted key valid at the checkpoint's time signed it (``unknown_key``).
        """
        body = self.checkpoint.body().encode()
        by_id = {(k.name, k.key_id): k for k in trusted if k.name != ANY_NAME}
        anonymous = [k for k in trusted if k.name == ANY_NAME]
        good: list[str] = []
        known_out_of_window: list[str] = []
        for name, kid, sig in self.signatures():
            key = by_id.get((name, kid))
            if key is None:
                raw = [_raw_public(k.public_key) for k in anonymous]
                found = [k for k, r in zip(anonymous, raw, strict=True) if _key_id(name, r) == kid]
                if not found:
                    continue
                key = found[0]
            try:
                key.public_key.verify(sig, body)
            except InvalidSignature:
                raise CheckpointError(
                    f"signature by key {name!r} does not verify", "bad_signature"
                ) from None
            if key.valid_at(self.checkpoint.time):
                good.append(name)
            else:
                known_out_of_window.append(name)
        if not good:
            why = (
                f"signed only by keys not valid at {format_ts(self.checkpoint.time)}: "
                + ", ".join(known_out_of_window)
                if known_out_of_window
                else "signed by no trusted key"
            )
            raise CheckpointError(f"checkpoint at size {self.checkpoint.tree_size} {why}",
                                  "unknown_key")  # fmt: skip
        return good


def parse_checkpoint(note: str) -> SignedCheckpoint:
    """Parse a signed checkpoint note strictly (signatures are *not* checked here).

    :raises CheckpointError: the note is malformed (kind ``malformed``).
    """
    if len(note.encode("utf-8", "surrogatepass")) > _MAX_NOTE_BYTES:
        raise CheckpointError("checkpoint note is too large")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("checkpoint note holds control characters")
    body, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise CheckpointError("checkpoint note has no signature block")
    body += "\n"
    lines = body.split("\n")[:-1]
    if len(lines) != 5:
        raise CheckpointError("checkpoint body must have 5 lines")
    origin, size_s, root_s, head_s, time_s = lines
    if not origin or not re.fullmatch(r"[1-9][0-9]{0,18}|0", size_s):
        raise CheckpointError("checkpoint origin or tree size is malformed")
    try:
        root = base64.b64decode(root_s, validate=True)
    except ValueError:
        raise CheckpointError("checkpoint root is not base64") from None
    if len(root) != 32 or base64.b64encode(root).decode() != root_s:
        raise CheckpointError("checkpoint root is not a canonical 32-byte hash")
    if not re.fullmatch(r"head [0-9a-f]{64}", head_s) or not time_s.startswith("time "):
        raise CheckpointError("checkpoint extension lines are malformed")
    try:
        when = parse_ts(time_s[5:])
    except ValueError:
        raise CheckpointError("checkpoint time is malformed") from None
    cp = Checkpoint(origin, int(size_s), root, head_s[5:], when)
    if cp.body() != body:
        raise CheckpointError("checkpoint body is not in canonical form")
    sig_lines = sigs.split("\n")[:-1]
    if not 1 <= len(sig_lines) <= _MAX_SIGS:
        raise CheckpointError("checkpoint must carry 1 to 16 signatures")
    for line in sig_lines:
        m = re.fullmatch(_DASH + r"([^\s+]+) ([A-Za-z0-9+/]+={0,2})", line)
        if not m:
            raise CheckpointError("malformed signature line")
        try:
            raw = base64.b64decode(m.group(2), validate=True)
        except ValueError:
            raise CheckpointError("signature is not base64") from None
        if len(raw) != 68 or base64.b64encode(raw).decode() != m.group(2):
            raise CheckpointError("signature is not a canonical 4+64-byte Ed25519 signature")
    return SignedCheckpoint(cp, note)
