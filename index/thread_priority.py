"""Lower the CPU priority of the calling thread, for index maintenance that runs beside searches.

Why: a bulk import retrains the IVF index aside, and for 1M vectors reading them back, k-means and
re-adding keep both cores busy for most of a minute. Searches served meanwhile had to share the
cores with it at equal priority: in the session-10 `make bench`, search-by-vector right after a
1M ingest read p99 16.0 ms at concurrency 1, against 4.7 ms once the retraining was done. The
outgrown index stays correct meanwhile (it is only slower), so the retraining is the work that can wait.

Linux keeps a nice value per thread (setpriority on the thread id), and threads created afterwards
inherit it: OpenMP's worker team for this thread's FAISS calls (libgomp keeps a pool per master
thread) runs at the lowered priority too, while the request threads' own teams keep theirs. A thread
cannot raise its priority again without privileges, so call this only in a thread that ends with its
background job. Elsewhere (no per-thread nice) it does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger("tribind.index")


def lower_thread_priority(nice: int) -> bool:
    """Run this thread `nice` steps nicer than the process's main thread (capped at 19; 0: leave it).

    Relative to the main thread, not to this one: a thread started by a lowered thread starts lowered
    already, and must not sink further. True if the priority is lowered now."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + nice)  # the pid is the main thread's id
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
        return os.getpriority(os.PRIO_PROCESS, tid) == target
    except OSError as exc:  # a sandbox may forbid it; maintenance then runs at normal priority
        log.warning("could not lower the priority of index maintenance (%s); it runs at normal priority", exc)
        return False
