"""Device prefetch: a thread turns the next host batches into device arrays while a step runs.

    feed = DevicePrefetch(train_iter, put=lambda b: sharding.global_batch(mesh, b),
                          size=2, limit=num_steps - start, sync=lambda k: k % save_every == 0)
    batch = next(feed)            # device arrays, `size` of them ready ahead
    state = feed.get_state()      # the state after the last batch taken, at a sync point

Resume stays exact without calling the wrapped iterator's `get_state` from the thread: after
every batch k with `sync(k)` (the steps that may checkpoint), the thread waits until batch k
has been taken and the next one is asked for. There the wrapped iterator stands exactly after
the batches taken, so `get_state` reads it then, on the caller's thread, as without prefetch.
`limit` stops reading after that many batches, so the wrapped iterator ends where the
caller's last step leaves it.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_END = object()   # the wrapped iterator is exhausted (or `limit` reached)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class DevicePrefetch:
    """Iterator of `put(next(iterator))`, computed `size` ahead by one thread.

    iterator: has `__next__`, and `get_state`/`set_state` for checkpoints.
    put: host batch -> device batch (e.g. global arrays); runs in the thread.
    size: device batches kept ready (memory: that many batches on the device).
    limit: batches to read at most (None: until the iterator ends).
    sync: batch number (1-based) -> whether `get_state` may be asked right after it.
    """

    def __init__(self, iterator: Iterator, put: Callable[[Any], Any], *, size: int = 2,
                 limit: int | None = None, sync: Callable[[int], bool] = lambda k: False):
        if size < 1:
            raise ValueError(f"DevicePrefetch: size={size} must be >= 1")
        self.iterator, self.put, self.size, self.limit, self.sync = (
            iterator, put, size, limit, sync)
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._resume = threading.Event()   # set: the thread may read past a sync point
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._taken = 0                     # batches handed to the caller
        self._done = False

    def __iter__(self):
        return self

    def _run(self) -> None:
        k = 0
        try:
            while not self._stop.is_set() and (self.limit is None or k < self.limit):
                try:
                    batch = next(self.iterator)
                except StopIteration:
                    break
                k += 1
                if not self._offer(self.put(batch)):
                    return
                if self.sync(k):
                    # Wait until batch k is taken and the next one asked for: until then
                    # the caller may read the iterator's state.
                    while not self._resume.wait(0.1):
                        if self._stop.is_set():
                            return
                    self._resume.clear()
            self._offer(_END)
        except BaseException as e:  # pylint: disable=broad-except  # re-raised in the caller
            self._offer(_Failed(e))

    def _offer(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self):
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="device-prefetch",
                                            daemon=True)
            self._thread.start()
        elif self.sync(self._taken):
            self._resume.set()
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        self._taken += 1
        return item

    def get_state(self):
        """The wrapped iterator's state after the batches taken (before any, or at a sync
        point only: elsewhere the thread has read ahead)."""
        if self._thread is not None and not self.sync(self._taken):
            raise RuntimeError(f"DevicePrefetch: get_state after batch {self._taken}, which is "
                               "no sync point; the iterator has been read ahead of it")
        return self.iterator.get_state()

    def set_state(self, state) -> None:
        if self._thread is not None:
            raise RuntimeError("DevicePrefetch: set_state after reading began; set the "
                               "wrapped iterator's state before wrapping it")
        self.iterator.set_state(state)

    def close(self) -> None:
        """Stops the thread (the batches it read ahead are dropped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
