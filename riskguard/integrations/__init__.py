"""Thin adapters between web frameworks and riskguard's framework-agnostic cores.

* :mod:`riskguard.integrations.fastapi` — ``mount_oauth(app, server)`` and
  ``oauth_router(server)`` (extra ``riskguard[fastapi]``);
* :mod:`riskguard.integrations.flask` — ``oauth_blueprint(server)`` and ``init_app(app,
  guard=…)`` (extra ``riskguard[flask]``);
* :mod:`riskguard.integrations.asgi` — ``RiskGuardMiddleware(app, guard=…)``: per request,
  the context (principal, request id), one audit batch and one ``pii.read`` event (pure
  ASGI, no extra).

Adapters only translate requests and responses; every rule lives in the core
(:class:`riskguard.auth.OAuthServer`, :mod:`riskguard.integrations._request`). Importing
this package imports no framework: each module imports its own and, when the extra is
missing, raises :class:`ImportError` naming it.
"""

from __future__ import annotations

__all__: list[str] = []
