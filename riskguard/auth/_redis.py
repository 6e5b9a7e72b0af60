"""Redis stores for auth: deny-list, refresh-token families, DPoP replay cache.

Every write is one Lua script (atomic on the server), so several processes share these
stores safely. Keys (under ``prefix``, default ``rg:auth:``)::

    deny:<jti>            revoked jti; value: expires_at ("" = for ever); TTL = remaining life
    rt:<sha256>           hash: one refresh-token record
    rf:<family>           hash: family state (revoked_at, revoke_reason, expires_at)
    rf:<family>:at        hash: access-token jti -> exp of the family
    replay:<sha256>       a DPoP proof id, SET NX with TTL

Keys expire with what they describe: a token with its expiry, a family with its last
token. The scripts touch keys they derive from arguments, so this targets one Redis server
(or a primary with replicas), not Redis Cluster.

Needs the ``riskguard[redis]`` extra.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

try:
    import redis as redis  # re-exported: the other Redis stores import it from here
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "riskguard's Redis stores need the redis package: pip install 'riskguard[redis]'"
    ) from exc

from riskguard.auth._denylist import check_jti
from riskguard.auth._refresh import (
    MAX_LEEWAY,
    AccessTokenRef,
    RefreshRecord,
    RotateResult,
    RotateStatus,
    check_successor,
)
from riskguard.errors import StorageError

__all__ = ["RedisDenyList", "RedisRefreshTokenStore", "RedisReplayCache"]

_DEFAULT_PREFIX = "rg:auth:"
_STATUSES: dict[str, RotateStatus] = {
    "rotated": "rotated", "reused": "reused", "revoked": "revoked", "expired": "expired",
}  # fmt: skip

# KEYS[1] deny key. ARGV[1] expires_at ("" = for ever), ARGV[2] TTL in ms. Keeps the later.
_REVOKE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur == '' then return 0 end
  if ARGV[1] ~= '' and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
end
if ARGV[1] == '' then
  redis.call('SET', KEYS[1], '')
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

# Live access tokens of a family: jti, exp pairs with exp > ARGV[1].
_LIVE = """
local function live(key, after)
  local out = {}
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) > after then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end
local function with_status(status, list)
  table.insert(list, 1, status)
  return list
end
"""

# KEYS[1] token, KEYS[2] family, KEYS[3] family access map.
# ARGV[1] expires_at, ARGV[2] ttl ms, ARGV[3] created_at, ARGV[4] access jti ("" none),
# ARGV[5] access exp, ARGV[6..] token field/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'expires_at', ARGV[1], 'created_at', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return 1
"""

# KEYS[1] old token, KEYS[2] family, KEYS[3] family access map, KEYS[4] new token.
# ARGV[1] now, ARGV[2] family id, ARGV[3] new ttl ms, ARGV[4] new expires_at,
# ARGV[5] new access jti ("" none), ARGV[6] its exp, ARGV[7] live-after,
# ARGV[8..] new token field/value pairs.
_ROTATE = (
    _LIVE
    + """
local now = tonumber(ARGV[1])
if redis.call('HGET', KEYS[1], 'family_id') ~= ARGV[2] then return {'unknown'} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'unknown'} end
if tonumber(redis.call('HGET', KEYS[1], 'expires_at')) <= now then return {'expired'} end
if redis.call('HEXISTS', KEYS[2], 'revoked_at') == 1 then
  return with_status('revoked', live(KEYS[3], tonumber(ARGV[7])))
end
if redis.call('HEXISTS', KEYS[1], 'used_at') == 1 then
  redis.call('HSET', KEYS[2], 'revoked_at', ARGV[1], 'revoke_reason', 'reuse')
  return with_status('reused', live(KEYS[3], tonumber(ARGV[7])))
end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'conflict'} end
redis.call('HSET', KEYS[1], 'used_at', ARGV[1])
redis.call('HSET', KEYS[4], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[4], ARGV[3])
local ttl = tonumber(ARGV[3])
if tonumber(redis.call('HGET', KEYS[2], 'expires_at')) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[2], 'expires_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if ARGV[5] ~= '' then
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) <= tonumber(ARGV[7]) then redis.call('HDEL', KEYS[3], all[i]) end
  end
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
  if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
end
return {'rotated'}
"""
)

# KEYS[1] family, KEYS[2] family access map. ARGV[1] now, ARGV[2] reason, ARGV[3] live-after.
_REVOKE_FAMILY = (
    _LIVE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 0 then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1], 'revoke_reason', ARGV[2])
end
return with_status('revoked', live(KEYS[2], tonumber(ARGV[3])))
"""
)


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise StorageError(f"{what} failed ({type(exc).__name__})", engine="redis") from exc


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _num(value: float) -> str:
    return repr(float(value))


def _ttl_ms(expires_at: float, now: float) -> int:
    return max(1, math.ceil((expires_at - now) * 1000))


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def _client(client: Any) -> Any:
    if not isinstance(client, redis.Redis):
        raise TypeError("client must be a redis.Redis (use redis.Redis.from_url(url))")
    return client


class RedisDenyList:
    """A :class:`~riskguard.auth.DenyListStore` in Redis: one key per revoked ``jti``
    whose TTL is the token's remaining life.

    :param client: a ``redis.Redis`` client.
    :param prefix: the key prefix of riskguard's auth keys.
    """

    def __init__(self, client: Any, *, prefix: str = _DEFAULT_PREFIX) -> None:
        self.client = _client(client)
        self.prefix = prefix
        self._revoke = self.client.register_script(_REVOKE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = _DEFAULT_PREFIX) -> RedisDenyList:
        """A deny-list on the Redis server at ``url``."""
        return cls(redis.Redis.from_url(url), prefix=prefix)

    def revoke(self, jti: str, *, expires_at: float | None, now: float | None = None) -> None:
        """Refuse ``jti`` until ``expires_at`` (``None``: for ever); nothing is stored when
        ``expires_at`` is not after ``now``. Revoking again keeps the later expiry.

        :raises ValueError: ``jti`` is empty or longer than 255 characters.
        :raises StorageError: Redis failed.
        """
        check_jti(jti)
        if expires_at is None:
            args = ["", ""]
        else:
            t = _now(now)
            if expires_at <= t:
                return
            args = [_num(expires_at), str(_ttl_ms(expires_at, t))]
        with _mapped("revoking a token"):
            self._revoke(keys=[f"{self.prefix}deny:{jti}"], args=args)

    def is_revoked(self, jti: str) -> bool:
        """``True`` while ``jti``'s entry lives.

        :raises StorageError: Redis failed (the verifier then refuses the token).
        """
        with _mapped("reading the deny-list"):
            return bool(self.client.exists(f"{self.prefix}deny:{jti}"))

    def prune(self, *, now: float) -> int:
        """Nothing to do: entries expire by their TTL. Returns 0."""
        return 0


def _fields(rec: RefreshRecord) -> list[str]:
    pairs: dict[str, str] = {
        "family_id": rec.family_id,
        "generation": str(rec.generation),
        "client_id": rec.client_id,
        "subject": rec.subject,
        "subject_type": rec.subject_type,
        "scope": rec.scope,
        "audience": rec.audience,
        "issued_at": _num(rec.issued_at),
        "expires_at": _num(rec.expires_at),
        "family_issued_at": _num(rec.family_issued_at),
        "roles": json.dumps(list(rec.roles), separators=(",", ":")),
        "claims": json.dumps(dict(rec.claims), separators=(",", ":"), sort_keys=True),
    }
    for name, value in (("tenant", rec.tenant), ("jkt", rec.jkt), ("access_jti", rec.access_jti)):
        if value is not None:
            pairs[name] = value
    if rec.access_exp is not None:
        pairs["access_exp"] = _num(rec.access_exp)
    return [item for pair in pairs.items() for item in pair]


def _record(token_hash: str, raw: dict[Any, Any], revoked_at: Any) -> RefreshRecord:
    f = {_text(k): _text(v) for k, v in raw.items()}
    return RefreshRecord(
        token_hash=token_hash,
        family_id=f["family_id"],
        generation=int(f["generation"]),
        client_id=f["client_id"],
        subject=f["subject"],
        subject_type=f["subject_type"],
        scope=f["scope"],
        audience=f["audience"],
        issued_at=float(f["issued_at"]),
        expires_at=float(f["expires_at"]),
        family_issued_at=float(f["family_issued_at"]),
        tenant=f.get("tenant"),
        roles=tuple(json.loads(f["roles"])),
        jkt=f.get("jkt"),
        claims=json.loads(f["claims"]),
        access_jti=f.get("access_jti"),
        access_exp=float(f["access_exp"]) if "access_exp" in f else None,
        used_at=float(f["used_at"]) if "used_at" in f else None,
        revoked_at=None if revoked_at is None else float(_text(revoked_at)),
    )


def _refs(flat: Sequence[Any]) -> tuple[AccessTokenRef, ...]:
    return tuple(
        AccessTokenRef(_text(flat[i]), float(_text(flat[i + 1]))) for i in range(0, len(flat), 2)
    )


class RedisRefreshTokenStore:
    """A :class:`~riskguard.auth.RefreshTokenStore` in Redis; every rotation and
    revocation is one Lua script, so it is atomic across processes.

    :param client: a ``redis.Redis`` client.
    :param prefix: the key prefix of riskguard's auth keys.
    """

    def __init__(self, client: Any, *, prefix: str = _DEFAULT_PREFIX) -> None:
        self.client = _client(client)
        self.prefix = prefix
        self._create = self.client.register_script(_CREATE)
        self._rotate = self.client.register_script(_ROTATE)
        self._revoke_family = self.client.register_script(_REVOKE_FAMILY)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = _DEFAULT_PREFIX) -> RedisRefreshTokenStore:
        """A store on the Redis server at ``url``."""
        return cls(redis.Redis.from_url(url), prefix=prefix)

    def _token_key(self, token_hash: str) -> str:
        return f"{self.prefix}rt:{token_hash}"

    def _family_keys(self, family_id: str) -> list[str]:
        return [f"{self.prefix}rf:{family_id}", f"{self.prefix}rf:{family_id}:at"]

    def create(self, record: RefreshRecord) -> None:
        """Start a new family with its first token.

        :raises StorageError: the family or the token hash exists, or Redis failed.
        """
        # The record's own expiry is measured from its issue time: the TTL runs from now.
        ttl = _ttl_ms(record.expires_at, record.issued_at)
        access = record.access
        args = [
            _num(record.expires_at),
            str(ttl),
            _num(record.family_issued_at),
            access.jti if access else "",
            _num(access.expires_at) if access else "",
            *_fields(record),
        ]
        keys = [self._token_key(record.token_hash), *self._family_keys(record.family_id)]
        with _mapped("storing a refresh token"):
            created = self._create(keys=keys, args=args)
        if not created:
            raise StorageError("the refresh-token family or token exists already", engine="redis")

    def get(self, token_hash: str) -> RefreshRecord | None:
        """The record of ``token_hash`` with its state, or ``None``.

        :raises StorageError: Redis failed.
        """
        with _mapped("reading a refresh token"):
            raw = self.client.hgetall(self._token_key(token_hash))
            if not raw:
                return None
            family = _text(raw.get(b"family_id", raw.get("family_id")))
            revoked_at = self.client.hget(self._family_keys(family)[0], "revoked_at")
        return _record(token_hash, raw, revoked_at)

    def rotate(self, token_hash: str, successor: RefreshRecord, *, now: float) -> RotateResult:
        """Use ``token_hash`` and store ``successor`` in one script (see the Protocol).

        :raises ValueError: ``successor`` is not the next generation of the token's family.
        :raises StorageError: Redis failed.
        """
        rec = self.get(token_hash)
        if rec is None:
            return RotateResult("unknown")
        check_successor(rec, successor)
        access = successor.access
        keys = [
            self._token_key(token_hash),
            *self._family_keys(rec.family_id),
            self._token_key(successor.token_hash),
        ]
        args = [
            _num(now),
            rec.family_id,
            str(_ttl_ms(successor.expires_at, now)),
            _num(successor.expires_at),
            access.jti if access else "",
            _num(access.expires_at) if access else "",
            _num(now - MAX_LEEWAY),
            *_fields(successor),
        ]
        with _mapped("rotating a refresh token"):
            reply = self._rotate(keys=keys, args=args)
        status = _text(reply[0])
        if status == "conflict":
            raise StorageError("the successor's token hash exists already", engine="redis")
        if status == "unknown":  # expired between the read and the script
            return RotateResult("unknown")
        state = _STATUSES[status]
        if state == "reused" or (state == "revoked" and rec.revoked_at is None):
            rec = replace(rec, revoked_at=now)
        return RotateResult(state, rec, _refs(reply[1:]))

    def revoke_family(
        self, family_id: str, *, now: float, reason: str
    ) -> tuple[AccessTokenRef, ...] | None:
        """Revoke a family (idempotent); its possibly live access tokens, or ``None``.

        :raises StorageError: Redis failed.
        """
        with _mapped("revoking a refresh-token family"):
            reply = self._revoke_family(
                keys=self._family_keys(family_id),
                args=[_num(now), reason[:32], _num(now - MAX_LEEWAY)],
            )
        if _text(reply[0]) == "unknown":
            return None
        return _refs(reply[1:])

    def prune(self, *, now: float) -> int:
        """Nothing to do: tokens and families expire by their TTL. Returns 0."""
        return 0


class RedisReplayCache:
    """A :class:`~riskguard.auth.ReplayCache` in Redis (``SET NX`` with a TTL), shared by
    every process serving one API. Keys are stored as their SHA-256.

    :param client: a ``redis.Redis`` client.
    :param prefix: the key prefix of riskguard's auth keys.
    """

    def __init__(self, client: Any, *, prefix: str = _DEFAULT_PREFIX) -> None:
        self.client = _client(client)
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str = _DEFAULT_PREFIX) -> RedisReplayCache:
        """A replay cache on the Redis server at ``url``."""
        return cls(redis.Redis.from_url(url), prefix=prefix)

    def add(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; ``False`` when it was already there.

        :raises StorageError: Redis failed.
        """
        if expires_at <= now:
            return True  # already stale: it could never block a later proof
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        with _mapped("recording a DPoP proof id"):
            added = self.client.set(
                f"{self.prefix}replay:{digest}", b"1", nx=True, px=_ttl_ms(expires_at, now)
            )
        return bool(added)
