"""A GrpcServer on its own asyncio loop in a background thread, for tests that call
real gRPC services in process."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

from rlhf.runtime.grpc import GrpcServer
from rlhf.runtime.settings import GrpcSettings


@contextlib.contextmanager
def serving(
    settings: GrpcSettings,
    register: Callable[[GrpcServer], None],
    name: str = "test",
    on_start: Callable[[], None] | None = None,
) -> Iterator[int]:
    """`register(server)` adds the servicers; `on_start` runs once they are added (e.g.
    the bus's `start`). Yields the bound port; the server stops on exit."""
    ready, stop, holder = threading.Event(), threading.Event(), {}

    async def main() -> None:
        server = GrpcServer(settings, name)
        register(server)
        if on_start is not None:
            on_start()
        holder["port"] = await server.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(0)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(60), "the gRPC server did not start"
    try:
        yield holder["port"]
    finally:
        stop.set()
        thread.join(10)
