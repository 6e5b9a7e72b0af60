"""A Redis :class:`~riskguard.auth.CounterStore` for login throttling.

One hash per counter (``<prefix><key>``: ``n`` count, ``exp`` window end), updated by one
Lua script, so concurrent hits from many processes are each counted once. The window end
is compared with the caller's ``now`` (tests pass it; production passes the clock), and a
TTL of the window's length lets Redis drop the key afterwards.

Needs the ``riskguard[redis]`` extra.
"""

from __future__ import annotations

import math
from typing import Any

# The import guard for the extra and the error mapping live with the other Redis stores.
from riskguard.auth._redis import _client, _mapped, redis
from riskguard.auth._throttle import Counter

__all__ = ["RedisCounterStore"]

_DEFAULT_PREFIX = "rg:auth:ctr:"

# KEYS[1] counter. ARGV[1] now, ARGV[2] new window end, ARGV[3] ttl ms.
_HIT = """
local exp = redis.call('HGET', KEYS[1], 'exp')
if (not exp) or tonumber(exp) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'n', 1, 'exp', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, ARGV[2]}
end
return {redis.call('HINCRBY', KEYS[1], 'n', 1), exp}
"""


class RedisCounterStore:
    """A :class:`~riskguard.auth.CounterStore` on Redis.

    :param client: a ``redis.Redis`` client.
    :param prefix: the key prefix.
    """

    def __init__(self, client: Any, *, prefix: str = _DEFAULT_PREFIX) -> None:
        self.client = _client(client)
        self.prefix = prefix
        self._hit = client.register_script(_HIT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = _DEFAULT_PREFIX) -> RedisCounterStore:
        """A store on a new client for ``url``."""
        return cls(redis.Redis.from_url(url), prefix=prefix)

    def hit(self, key: str, *, window: float, now: float) -> Counter:
        """Add one to ``key`` (see the Protocol).

        :raises StorageError: Redis failed.
        """
        end = repr(float(now + window))
        ttl = max(1, math.ceil(window * 1000))
        with _mapped("counting a login failure"):
            count, exp = self._hit(keys=[self.prefix + key], args=[repr(float(now)), end, ttl])
        return Counter(int(count), float(exp))

    def peek(self, key: str, *, now: float) -> Counter | None:
        """The counter of ``key`` if its window is open.

        :raises StorageError: Redis failed.
        """
        with _mapped("reading a login counter"):
            count, exp = self.client.hmget(self.prefix + key, ["n", "exp"])
        if count is None or exp is None or float(exp) <= now:
            return None
        return Counter(int(count), float(exp))

    def clear(self, key: str) -> None:
        """Forget ``key``.

        :raises StorageError: Redis failed.
        """
        with _mapped("clearing a login counter"):
            self.client.delete(self.prefix + key)
