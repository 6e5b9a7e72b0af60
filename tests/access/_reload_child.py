"""The second process of ``test_redis_reload``: an enforcer built from a riskguard.toml
(SQL policy, ``reload = "redis"``), as a deployment's other worker would be.

Usage: ``python _reload_child.py CONFIG``. Prints ``ready <hash> <allowed>`` once it is
subscribed, then ``reloaded <hash> <allowed>`` after its policy changed (``<allowed>``:
whether zoe may read orders in m:1001), and exits 0; exits 1 if no reload came in 60 s.
"""

from __future__ import annotations

import sys
import time

from riskguard.access import RedisReloadListener
from riskguard.guard import Guard


def main(config: str) -> int:
    with Guard.from_config(config) as guard:
        ac = guard.access
        try:
            (listener,) = ac.triggers
            assert isinstance(listener, RedisReloadListener) and listener.alive
            first = ac.policy_hash
            print("ready", first, ac.enforce("zoe", "m:1001", "order", "read"), flush=True)
            deadline = time.monotonic() + 60
            while ac.policy_hash == first:
                if time.monotonic() > deadline:
                    print("timeout", flush=True)
                    return 1
                listener.wait_handled(listener.handled + 1, timeout=0.5)
            allowed = ac.enforce("zoe", "m:1001", "order", "read")
            print("reloaded", ac.policy_hash, allowed, flush=True)
        finally:
            ac.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
