"""Device prefetch: a thread turns the next host batches into device arrays while a step runs.

    feed = DevicePrefetch(train_iter, put=lambda b: sharding.global_batch(mesh, b),
                          size=2, limit=num_steps - start)
    batch = next(feed)            # device arrays, `size` of them ready ahead
    state = feed.get_state()      # the state after the last batch taken, at any step
"""
from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_END = object()   # the wrapped iterator is exhausted (or `limit` reached)


class DevicePrefetch:
    """Iterator of `put(next(iterator))` (put: host batch -> device batch, run in the thread),
    `size` ahead, `limit` batches at most (None: all). The `iterator` has `get_state`; restore
    its state before wrapping it."""

    def __init__(self, iterator: Iterator, put: Callable[[Any], Any], *, size: int = 2,
                 limit: int | None = None):
        if size < 1:
            raise ValueError(f"DevicePrefetch: size={size} must be >= 1")
        self.iterator, self.put, self.size, self.limit = iterator, put, size, limit
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._taken = 0                     # batches handed to the caller
        self._state = None                  # the iterator's state after the last one taken
        self._done = False

    def __iter__(self):
        return self

    def _run(self) -> None:
        # The state recorded with each batch makes `get_state` exact despite the read-ahead.
        k = 0
        try:
            while not self._stop.is_set() and (self.limit is None or k < self.limit):
                try:
                    batch = next(self.iterator)
                except StopIteration:
                    break
                k += 1
                # Exactly after batch k; a copy, should the iterator mutate it later.
                state = copy.deepcopy(self.iterator.get_state())
                if not self._offer((self.put(batch), state)):
                    return
            self._offer(_END)
        except BaseException as e:  # pylint: disable=broad-except  # re-raised in the caller
            self._offer(e)

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
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._taken += 1
        batch, self._state = item
        return batch

    def get_state(self):
        """The wrapped iterator's state after the batches taken (not after those read ahead)."""
        if self._taken == 0:
            if self._thread is not None:
                raise RuntimeError("DevicePrefetch: get_state after reading began but before "
                                   "a batch was taken; the iterator has been read ahead")
            return self.iterator.get_state()
        return self._state

    def close(self) -> None:
        """Stops the thread (the batches it read ahead are dropped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._done = True
