"""The folder where the workers of `serve --workers N` keep their metrics for one another.

prometheus-client's multiprocess mode has each worker write its samples to memory-mapped
files in PROMETHEUS_MULTIPROC_DIR, and a scrape served by any worker merges them all. The
library reads that variable when it is first imported, so it is set here, in the serving
process, before the workers start (each a new interpreter that imports it afresh).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def worker_metrics_folder(workers: int) -> Iterator[str | None]:
    """A fresh, empty folder for `workers` > 1, named in the environment the workers inherit
    and removed afterwards. None for one worker, which keeps a plain in-process registry with
    the process_* metrics (unless PROMETHEUS_MULTIPROC_DIR was set by whoever started us)."""
    if workers <= 1:
        yield None
        return
    # A new folder each start: files left by an earlier run would add its counts to ours.
    folder = tempfile.mkdtemp(prefix="chat-gateway-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)
