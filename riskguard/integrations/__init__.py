"""Thin adapters between web frameworks and riskguard's framework-agnostic cores.

* :mod:`riskguard.integrations.fastapi` — ``mount_oauth(app, server)`` and
  ``oauth_router(server)`` (extra ``riskguard[fastapi]``);
* :mod:`riskguard.integrations.flask` — ``oauth_blueprint(server)`` (extra
  ``riskguard[flask]``).

Adapters only translate requests and responses; every rule lives in the core
(:class:`riskguard.auth.OAuthServer`). Importing this package imports no framework: each
module imports its own and, when the extra is missing, raises :class:`ImportError` naming
it.
"""

from __future__ import annotations

__all__: list[str] = []
