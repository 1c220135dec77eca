"""Listing an archive in pages, in parallel by prefix for large archives.

``list_pages`` splits the archive at its first ``/`` level and lists each prefix in its own thread
(the objects at the top level come first). Pages arrive as they are listed, so page order is not
key order. A bounded queue keeps at most a few pages in memory whatever the archive's size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from nightscan.storage import ObjectInfo, Storage

PAGE_SIZE = 1000
_DONE = object()


def list_pages(storage: Storage, parallel: int) -> Iterator[list[ObjectInfo]]:
    """Every object of ``storage`` once, in pages; ``parallel`` > 1 lists top-level prefixes concurrently."""
    if parallel <= 1:
        yield from storage.list(page_size=PAGE_SIZE)
        return
    prefixes, top = storage.split("")
    for start in range(0, len(top), PAGE_SIZE):
        yield top[start : start + PAGE_SIZE]
    if not prefixes:
        return
    pages: queue.Queue[object] = queue.Queue(maxsize=2 * parallel)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def produce(prefix: str) -> None:
        try:
            for page in storage.list(prefix, page_size=PAGE_SIZE):
                if stop.is_set():
                    return
                put(page)
        except BaseException as exc:  # the consumer raises it
            put(exc)
        finally:
            put(_DONE)

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="list") as pool:
        for prefix in prefixes:
            pool.submit(produce, prefix)
        try:
            finished = 0
            while finished < len(prefixes):
                item = pages.get()
                if item is _DONE:
                    finished += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item  # type: ignore[misc]
        finally:
            stop.set()
