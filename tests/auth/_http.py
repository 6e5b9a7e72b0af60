"""Synchronous HTTP over an ASGI app (httpx's ASGITransport, one event loop per call)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

BASE = "https://id.o2o.test"


def call(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            response = await client.request(method, url, **kwargs)
            await response.aread()
            return response

    return asyncio.run(run())
