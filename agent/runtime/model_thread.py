"""Run blocking model work off the event loop.

Each model gets its own single-thread executor (`ModelThread`), which both keeps the loop free
and serialises access to a model object that is not thread-safe. `stream()` turns a blocking
iterator (LLM tokens, TTS chunks) into an async iterator; closing the async iterator (e.g. a
cancelled turn) stops the worker at its next item, and an exception inside the worker is
re-raised in the caller instead of leaving it waiting.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class ModelThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def stream(self, make_iterator: Callable[[threading.Event], Iterator[T]],
                     max_ahead: int | None = None) -> AsyncIterator[T]:
        """Iterate `make_iterator(stop)` in the model thread and yield its items here.

        `stop` is set when the consumer goes away; the worker checks it between items and the
        iterator may check it too (e.g. a generation stopping criterion). With `max_ahead`, the
        worker pauses when that many items are waiting unconsumed (backpressure: a consumer that
        stops pulling for a while, e.g. to give the CPU to the voice, pauses the model too).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        room = threading.Semaphore(max_ahead) if max_ahead else None

        def wait_for_room() -> bool:
            while not room.acquire(timeout=0.05):  # type: ignore[union-attr]
                if stop.is_set():
                    return False
            return True

        def deliver(item, error=None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (item, error))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        def work() -> None:
            iterator = None
            try:
                iterator = iter(make_iterator(stop))  # inside the try: a failure here must reach the consumer too
                for item in iterator:
                    if stop.is_set() or (room is not None and not wait_for_room()):
                        break
                    deliver(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                deliver(_DONE, exc)
                return
            finally:
                close = getattr(iterator, "close", None) if iterator is not None else None
                if close is not None:
                    close()
            deliver(_DONE)

        future = loop.run_in_executor(self._executor, work)
        try:
            while True:
                item, error = await queue.get()
                if item is _DONE:
                    if error is not None:
                        raise error
                    break
                if room is not None:
                    room.release()
                yield item
        finally:
            stop.set()
            if not future.done():
                # Let the worker wind down in the background; it stops at its next item.
                future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
