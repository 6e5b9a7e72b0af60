"""Benchmark ``riskguard.auth.TokenVerifier.verify`` against plain PyJWT, in one run.

::

    python benchmarks/auth_bench.py [--seconds 0.25] [--repeat 5]

For HS256, RS256, ES256 and EdDSA, verifications per second of

* ``TokenVerifier.verify`` with every check on: a four-key JWKS, strict JSON, header
  allow-list, ``typ``, RFC 9068 required claims, lifetime cap and a deny-list lookup;
* plain ``jwt.decode(token, key, algorithms=[alg], audience=..., issuer=..., leeway=...)``
  with the key pinned (the secret bytes for HS256, the public key object otherwise);
* for reference, the signature check alone (PyJWT's algorithm object, prepared key): the
  ceiling any verifier can reach;
* a ``PyJWKClient``-style lookup: ``PyJWKSet.from_dict(jwks)`` once, then per token
  ``get_unverified_header``, the key whose ``key_id`` is the ``kid``, and ``jwt.decode``.

Every contender verifies the same pool of distinct tokens (``--pool``, each with its own
``jti`` and signature, one header per algorithm as from one issuer). Each figure is the
best of ``--repeat`` timed rounds of about ``--seconds`` each, with the
three contenders interleaved round by round. The goal (from the issue) is a ratio ≥ 1.0x
against plain PyJWT for every algorithm; the figures are printed, never asserted. Before
timing, the script checks that all three accept the same tokens and shows a few attack
tokens that plain PyJWT accepts and riskguard refuses.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from rich.console import Console
from rich.table import Table

from riskguard.auth import MemoryDenyList, TokenRejected, TokenVerifier

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)

ISSUER = "https://id.o2o.test"
AUDIENCE = "orders-api"
LEEWAY = 30
ALGS = ("HS256", "RS256", "ES256", "EdDSA")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_keys() -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """alg → (signing key, pinned verification key, public JWK with kid and alg)."""
    hs = b"bench-secret-" + uuid.uuid4().bytes + uuid.uuid4().bytes[:3]  # 32 bytes
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    out = {
        "HS256": (hs, hs, HMACAlgorithm.to_jwk(hs, as_dict=True)),
        "RS256": (rs, rs.public_key(), RSAAlgorithm.to_jwk(rs.public_key(), as_dict=True)),
        "ES256": (es, es.public_key(), ECAlgorithm.to_jwk(es.public_key(), as_dict=True)),
        "EdDSA": (ed, ed.public_key(), OKPAlgorithm.to_jwk(ed.public_key(), as_dict=True)),
    }
    for alg, (_, _, jwk) in out.items():
        jwk.update(kid=f"{alg.lower()}-1", alg=alg)
    return out


def make_token(alg: str, signing_key: Any, now: float, **extra: Any) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-1001",
        "client_id": "rider-app",
        "scope": "orders:read orders:write",
        "roles": ["customer"],
        "tenant": "m-42",
        "iat": int(now) - 5,
        "exp": int(now) + 3000,  # valid for the whole run
        "jti": uuid.uuid4().hex,
    }
    claims.update(extra)
    headers = {"typ": "at+jwt", "kid": f"{alg.lower()}-1"}
    return jwt.encode(claims, signing_key, algorithm=alg, headers=headers)


def _raw_token(alg: str, signing_key: Any, header: dict[str, Any], body: bytes) -> str:
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(body)
    sig = jwt.get_algorithm_by_name(alg).sign(signing_input.encode(), signing_key)
    return signing_input + "." + _b64(sig)


def signature_only(alg: str, token: str, key: Any) -> Callable[[str], Any]:
    """The signature check alone, on pieces split and decoded once, with a prepared key."""
    signing_input, _, sig_seg = token.rpartition(".")
    message = signing_input.encode()
    signature = base64.urlsafe_b64decode(sig_seg + "=" * (-len(sig_seg) % 4))
    algorithm = jwt.get_algorithm_by_name(alg)
    prepared = algorithm.prepare_key(key)

    def verify(_: str) -> Any:
        return algorithm.verify(message, prepared, signature)

    return verify


def rate(fn: Callable[[str], Any], tokens: list[str], seconds: float) -> tuple[int, float]:
    """Run ``fn`` over ``tokens``, round after round, for about ``seconds``: (calls, elapsed)."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for token in tokens:
            fn(token)
        n += len(tokens)
        now = time.perf_counter()
        if now >= deadline:
            return n, now - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=0.25, help="length of one timed round")
    ap.add_argument("--repeat", type=int, default=5, help="rounds per contender (best kept)")
    ap.add_argument("--pool", type=int, default=200, help="distinct tokens per algorithm")
    args = ap.parse_args(argv)

    console.print(
        f"Python {platform.python_version()}, PyJWT {jwt.__version__}, "
        f"{platform.machine()}; best of {args.repeat} rounds of {args.seconds}s"
    )
    keys = make_keys()
    jwks = {"keys": [jwk for _, _, jwk in keys.values()]}
    deny = MemoryDenyList()
    for _ in range(10_000):  # a realistic deny-list, not an empty one
        deny.revoke(uuid.uuid4().hex, expires_at=time.time() + 3600)
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY, deny_list=deny)
    jwk_set = jwt.PyJWKSet.from_dict(jwks)

    def riskguard(token: str) -> Any:
        return verifier.verify(token)

    def pinned(alg: str, key: Any) -> Callable[[str], Any]:
        def plain(token: str) -> Any:
            return jwt.decode(
                token, key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER, leeway=LEEWAY
            )

        return plain

    def jwks_lookup(token: str) -> Any:
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in jwk_set.keys if k.key_id == kid)
        return jwt.decode(
            token,
            key,
            algorithms=[key.algorithm_name],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY,
        )

    # -- same verdicts on valid tokens; attacks plain PyJWT lets through -------------------
    now = time.time()
    tokens = {alg: make_token(alg, keys[alg][0], now) for alg in ALGS}
    for alg, token in tokens.items():
        a, b, c = riskguard(token), pinned(alg, keys[alg][1])(token), jwks_lookup(token)
        assert a == b == c, f"{alg}: the three verifiers disagree on a valid token"
    console.rule("attacks plain jwt.decode accepts (EdDSA key pinned)")
    ed_sign, ed_pub, _ = keys["EdDSA"]
    ed_head = {"alg": "EdDSA", "kid": "eddsa-1", "typ": "at+jwt"}
    iat = int(now) - 5
    base = f'"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"u","client_id":"c","jti":"j{{}}"'
    attacks = {
        "typ JWT instead of at+jwt": _raw_token(
            "EdDSA", ed_sign, {**ed_head, "typ": "JWT"},
            f'{{{base.format(1)},"iat":{iat},"exp":{iat + 600}}}'.encode(),
        ),
        "duplicate sub in the payload": _raw_token(
            "EdDSA", ed_sign, ed_head,
            f'{{{base.format(2)},"sub":"admin","iat":{iat},"exp":{iat + 600}}}'.encode(),
        ),
        "exp as a string": _raw_token(
            "EdDSA", ed_sign, ed_head,
            f'{{{base.format(3)},"iat":{iat},"exp":"{iat + 600}"}}'.encode(),
        ),
        "a ten-year lifetime": _raw_token(
            "EdDSA", ed_sign, ed_head,
            f'{{{base.format(4)},"iat":{iat},"exp":{iat + 315_360_000}}}'.encode(),
        ),
        "a jku header": _raw_token(
            "EdDSA", ed_sign, {**ed_head, "jku": "https://evil.test/jwks"},
            f'{{{base.format(5)},"iat":{iat},"exp":{iat + 600}}}'.encode(),
        ),
    }  # fmt: skip
    for name, token in attacks.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pinned("EdDSA", ed_pub)(token)
                plain_says = "accepts"
            except jwt.PyJWTError:
                plain_says = "refuses"
        try:
            verifier.verify(token)
            rg_says = "ACCEPTS"
        except TokenRejected as exc:
            rg_says = f"refuses ({exc.code})"
        console.print(f"{name:<32} plain PyJWT {plain_says:<8} riskguard {rg_says}")

    # -- throughput --------------------------------------------------------------------------
    console.rule("verifications per second (higher is better)")
    table = Table()
    for col in ("alg", "signature only", "riskguard verify", "plain jwt.decode", "vs plain"):
        table.add_column(col, justify="right")
    table.add_column("PyJWKSet lookup", justify="right")
    table.add_column("vs lookup", justify="right")
    table.add_column("goal ≥ 1.0x plain", justify="center")
    all_met = True
    for alg in ALGS:
        token = tokens[alg]
        # Distinct tokens (own jti, own signature), as a server sees them; one header.
        pool = [make_token(alg, keys[alg][0], now) for _ in range(args.pool)]
        contenders = {
            "signature": signature_only(alg, token, keys[alg][1]),
            "riskguard": riskguard,
            "plain": pinned(alg, keys[alg][1]),
            "jwks": jwks_lookup,
        }
        best = dict.fromkeys(contenders, 0.0)
        for fn in contenders.values():  # warm-up
            rate(fn, pool, 0.05)
        for _ in range(args.repeat):
            for name, fn in contenders.items():
                n, elapsed = rate(fn, pool, args.seconds)
                best[name] = max(best[name], n / elapsed)
        vs_plain = best["riskguard"] / best["plain"]
        vs_jwks = best["riskguard"] / best["jwks"]
        met = vs_plain >= 1.0
        all_met &= met
        table.add_row(
            alg,
            f"{best['signature']:,.0f}/s",
            f"{best['riskguard']:,.0f}/s",
            f"{best['plain']:,.0f}/s",
            f"{vs_plain:.2f}x",
            f"{best['jwks']:,.0f}/s",
            f"{vs_jwks:.2f}x",
            "yes" if met else "NO",
        )
    console.print(table)
    console.print(
        "signature only: PyJWT's algorithm object verifying the signature with a prepared key "
        "and nothing else, the ceiling for any verifier."
    )
    console.print("goal met for every algorithm" if all_met else "goal NOT met for every algorithm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
