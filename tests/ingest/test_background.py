"""Ingest's background loops (housekeeping, heartbeat) stop even when their cancel is lost inside a round."""

from __future__ import annotations

import asyncio

from ingest._background import BackgroundLoop


async def test_a_loop_whose_cancel_is_swallowed_still_stops() -> None:
    rounds = 0
    swallowed = 0

    async def body(loop: BackgroundLoop) -> None:
        nonlocal rounds, swallowed
        while not loop.stopping:
            rounds += 1
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                swallowed += 1  # what a library waiting on the database may do: the cancel never reaches us

    bg = BackgroundLoop("test-loop", body)
    bg.start()
    await asyncio.sleep(0.05)
    async with asyncio.timeout(2):
        await bg.stop()
    print(f"{rounds} rounds, {swallowed} cancel(s) swallowed")
    assert swallowed == 1
    assert rounds >= 2
    await bg.stop()  # a second stop is harmless
