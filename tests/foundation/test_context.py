from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from riskguard.context import (
    Principal,
    RequestInfo,
    current_principal,
    current_request,
    propagate,
    request_context,
)


def test_block_sets_and_restores() -> None:
    assert current_principal() is None
    alice = Principal("alice", roles=("customer",))
    with request_context(alice) as req:
        assert current_principal() is alice
        assert current_request() is req
        assert len(req.request_id) == 32
        bob = Principal("bob", type="staff")
        with request_context(bob, RequestInfo(request_id="inner")):
            assert current_principal() is bob
            assert current_request().request_id == "inner"  # type: ignore[union-attr]
        assert current_principal() is alice
    assert current_principal() is None
    assert current_request() is None


def test_restored_after_exception() -> None:
    with pytest.raises(RuntimeError), request_context(Principal("x")):
        raise RuntimeError("boom")
    assert current_principal() is None


def test_principal_validation() -> None:
    with pytest.raises(ValueError):
        Principal("")
    with pytest.raises(ValueError):
        Principal("x", type="robot")  # type: ignore[arg-type]


def test_asyncio_tasks_each_see_their_own_principal() -> None:
    async def handler(name: str, delay: float) -> tuple[str, str]:
        with request_context(Principal(name)):
            await asyncio.sleep(delay)
            # a child task inherits the context it was created in
            child = await asyncio.create_task(asyncio.sleep(0, result=current_principal()))
            in_thread = await asyncio.to_thread(current_principal)
            assert child is not None and in_thread is not None
            return child.subject, in_thread.subject

    async def main() -> list[tuple[str, str]]:
        return await asyncio.gather(*(handler(f"u{i}", 0.001 * (5 - i)) for i in range(5)))

    assert asyncio.run(main()) == [(f"u{i}", f"u{i}") for i in range(5)]


def test_threads_need_propagate() -> None:
    seen: dict[str, str | None] = {}

    def look(label: str) -> None:
        p = current_principal()
        seen[label] = p.subject if p else None

    with request_context(Principal("carol")):
        plain = threading.Thread(target=look, args=("plain",))
        plain.start()
        plain.join()
        wrapped = threading.Thread(target=propagate(look), args=("wrapped",))
        wrapped.start()
        wrapped.join()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(propagate(look), "pool").result()
    assert seen == {"plain": None, "wrapped": "carol", "pool": "carol"}


def test_threads_are_isolated_from_each_other() -> None:
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def worker(i: int) -> None:
        with request_context(Principal(f"t{i}")):
            barrier.wait()
            p = current_principal()
            results.append(p is not None and p.subject == f"t{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
