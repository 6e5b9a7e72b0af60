"""Keys shared by the auth tests: generated once per session, never stored."""

from __future__ import annotations

import pytest

from tests.auth._tokens import TestKey, make_key


@pytest.fixture(scope="session")
def keys() -> dict[str, TestKey]:
    """One trusted key per algorithm, plus a DPoP holder key (ES256) and a stranger's."""
    return {
        "HS256": make_key("HS256", "hs-1"),
        "RS256": make_key("RS256", "rs-1"),
        "ES256": make_key("ES256", "es-1"),
        "EdDSA": make_key("EdDSA", "ed-1"),
        "holder": make_key("ES256", "holder"),
        "holder-ed": make_key("EdDSA", "holder-ed"),
        "stranger": make_key("ES256", "es-1"),  # same kid and alg as ours, another key
    }
