"""Monte Carlo studies in parallel: in this process, on a local process pool or
on a Dask cluster, with the same results bit for bit whatever runs them.

Every caller (``simulate``, ``compare``, ``plan``, ``sweep``) goes through
:func:`run_studies` (or :func:`run_study` for one study). A study is ``runs``
independent rollouts of one strategy on one scenario; run *i* of a study seeded
*s* uses ``derive_seed(s, i)``, exactly as :func:`~.runner.run_many` does.

How determinism is kept:

* :func:`~.runner.run_once` is a pure function of (scenario, strategy spec,
  seed): no RNG is shared between runs or processes, each run builds its own
  ``random.Random`` from its derived seed;
* the seed of a run depends only on the study's seed and the run's index,
  never on which chunk, process or machine runs it, nor when;
* results travel back by pickle (floats exactly) and are put back in run
  order before anyone looks at them, so :func:`~.runner.summarize` sees the
  same list as a serial run.

Work is cut into chunks of consecutive runs (a 20-instance run takes about a
millisecond, so one task per run would be mostly inter-process traffic): about
:data:`CHUNKS_PER_SLOT` chunks per worker, each at least
:data:`MIN_CHUNK_COST` instance-runs when the study is big enough.
"""

from __future__ import annotations

import importlib
import math
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engine.errors import InputError
from ..engine.model import Instance
from .runner import RunResult, check_topology, derive_seed, run_once
from .scenario import Scenario

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "CHUNKS_PER_SLOT",
    "CONNECT_TIMEOUT_S",
    "DASK_EXTRA_MESSAGE",
    "MIN_CHUNK_COST",
    "SERIAL_THRESHOLD",
    "Chunk",
    "Progress",
    "Study",
    "default_workers",
    "plan_chunks",
    "run_chunk",
    "run_studies",
    "run_study",
]

#: ``progress(done, total)``: runs finished so far, out of all runs asked for.
Progress = Callable[[int, int], None]

#: With the default worker count, studies smaller than this many instance-runs
#: (runs x instances, summed over the studies) run serially in this process.
#: Measured on the 2-core CI machine: a run cost about 80 us per instance, and
#: a spawned pool about 0.12 s to start (fresh interpreters importing simpy and
#: vmss_rollout); two workers broke even near 3 000 instance-runs (0.25 s of
#: work) and won from there (4 000: 0.33 s serial, 0.27 s; 8 000: 0.67 s, 0.45 s).
#: Since issue 13 a run costs about 40-50 us per instance, which would move the
#: break even towards 6 000; but workers now fork from a fork server instead of
#: each importing everything, and this process runs chunks while they start
#: (:func:`_run_on_pool`), which moves it back. Left at 5 000: on the shared
#: machine (load 3-5 on 2 cores) a pool lost to a serial run even at 20 000
#: instance-runs (the default ``compare``: 1.9-2.7 s vs 1.1-1.8 s), because the
#: second core was not free; measuring the break even needs an idle machine.
#: ``workers=N`` given explicitly always uses N workers.
SERIAL_THRESHOLD = 5_000
#: chunks per worker slot: enough to balance uneven runs, few enough to keep
#: the traffic small
CHUNKS_PER_SLOT = 4
#: the smallest chunk worth a round trip, in instance-runs (about 60 ms)
MIN_CHUNK_COST = 1_000
#: seconds to wait for a Dask scheduler to answer (and for a worker to join)
CONNECT_TIMEOUT_S = 5.0
DASK_EXTRA_MESSAGE = "--dask needs dask.distributed: pip install 'vmss-rollout[dask]'"


@dataclass(frozen=True)
class Study:
    """``runs`` runs of ``strategy`` on ``scenario``, run *i* seeded
    ``derive_seed(seed, i)``; ``fleet`` and ``record`` as for :func:`run_once`."""

    scenario: Scenario
    strategy: str
    runs: int
    seed: int
    fleet: tuple[Instance, ...] | None = None
    record: bool = False

    @property
    def cost(self) -> int:
        """Instance-runs: what one run costs, roughly, times the runs."""
        size = len(self.fleet) if self.fleet is not None else self.scenario.instances
        return self.runs * max(1, size)


@dataclass(frozen=True)
class Chunk:
    """Runs ``start`` to ``stop - 1`` of study number ``index``."""

    index: int
    study: Study
    start: int
    stop: int


def run_chunk(chunk: Chunk) -> tuple[int, int, list[RunResult]]:
    """Run one chunk (in a worker): (study index, first run, results in run order)."""
    study = chunk.study
    fleet = list(study.fleet) if study.fleet is not None else None
    results = [
        run_once(
            study.scenario,
            study.strategy,
            derive_seed(study.seed, i),
            record=study.record,
            fleet=fleet,
        )
        for i in range(chunk.start, chunk.stop)
    ]
    return chunk.index, chunk.start, results


def default_workers() -> int:
    """The CPUs this process may run on (``os.cpu_count()`` where affinity is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def plan_chunks(studies: Sequence[Study], slots: int) -> list[Chunk]:
    """Cut the studies into chunks of consecutive runs for ``slots`` parallel workers."""
    total = sum(s.cost for s in studies)
    if total == 0:
        return []
    # aim for CHUNKS_PER_SLOT chunks per slot, none under MIN_CHUNK_COST, but
    # at least one chunk per slot when there is that much work
    target = max(total / (max(1, slots) * CHUNKS_PER_SLOT), MIN_CHUNK_COST)
    target = min(target, total / max(1, slots))
    chunks: list[Chunk] = []
    for index, study in enumerate(studies):
        if study.runs == 0:
            continue
        per_run = study.cost / study.runs
        size = max(1, min(study.runs, round(target / per_run)))
        count = math.ceil(study.runs / size)
        size = math.ceil(study.runs / count)  # even chunks
        for start in range(0, study.runs, size):
            chunks.append(Chunk(index, study, start, min(study.runs, start + size)))
    return chunks


def run_study(
    scenario: Scenario,
    strategy: str,
    *,
    runs: int | None = None,
    seed: int | None = None,
    fleet: Sequence[Instance] | None = None,
    record: bool = False,
    workers: int | None = None,
    dask: str | None = None,
    progress: Progress | None = None,
) -> list[RunResult]:
    """``runs`` runs (default: the scenario's) of ``strategy`` seeded from ``seed``
    (default: the scenario's), in run order: the same list as
    :func:`~.runner.run_many` (with ``record`` as :func:`run_once`'s), wherever it runs.

    ``workers``: processes of a local pool (default: every CPU, but serial below
    :data:`SERIAL_THRESHOLD` instance-runs; 1: serial, no pool). ``dask``: the
    address of a Dask scheduler (``tcp://host:8786``) to run on instead.
    """
    study = Study(
        scenario,
        strategy,
        scenario.runs if runs is None else runs,
        scenario.seed if seed is None else seed,
        tuple(fleet) if fleet is not None else None,
        record,
    )
    return run_studies([study], workers=workers, dask=dask, progress=progress)[0]


def run_studies(
    studies: Sequence[Study],
    *,
    workers: int | None = None,
    dask: str | None = None,
    progress: Progress | None = None,
) -> list[list[RunResult]]:
    """Every study's results, in study order and run order, sharing one pool or
    cluster connection (``compare`` and ``sweep`` run all their studies at once)."""
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise InputError(f"--workers: expected a whole number >= 1, got {workers!r}")
    if dask is not None and workers is not None:
        raise InputError("--workers and --dask exclude each other: the cluster has its workers")
    for study in studies:
        if study.runs < 0:
            raise InputError(f"runs: expected a whole number >= 0, got {study.runs}")
        check_topology(study.scenario, study.strategy)
    total = sum(s.runs for s in studies)
    results: list[list[RunResult | None]] = [[None] * s.runs for s in studies]
    done = 0

    def collect(index: int, start: int, chunk_results: list[RunResult]) -> None:
        nonlocal done
        results[index][start : start + len(chunk_results)] = chunk_results
        done += len(chunk_results)
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    if dask is not None:
        _run_on_dask(dask, studies, collect)
    else:
        count = default_workers() if workers is None else workers
        if workers is None and sum(s.cost for s in studies) < SERIAL_THRESHOLD:
            count = 1
        if count == 1:
            for index, study in enumerate(studies):
                for i in range(study.runs):
                    collect(*run_chunk(Chunk(index, study, i, i + 1)))
        else:
            _run_on_pool(count, studies, collect)
    out: list[list[RunResult]] = []
    for study_results in results:
        complete = [r for r in study_results if r is not None]
        assert len(complete) == len(study_results), "a chunk went missing"
        out.append(complete)
    return out


_Collect = Callable[[int, int, list[RunResult]], None]


def _run_on_pool(workers: int, studies: Sequence[Study], collect: _Collect) -> None:
    chunks = plan_chunks(studies, workers)
    if not chunks:
        return
    # imported here: the CLI's start-up (``--help``) does not need them
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = _pool_context()
    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=context, initializer=_worker_init
    )
    # The workers get chunks from the front, two each at a time. Until the first
    # of them comes back (the pool is starting: about 0.1-0.2 s for a fork
    # server, more for spawn), this process runs chunks from the back itself;
    # then it only waits, so it never holds the last chunk. Where a chunk runs
    # changes no result (collect puts it in its place).
    queue = deque(chunks)
    pending: set[Future[tuple[int, int, list[RunResult]]]] = set()
    starting = True
    try:
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                pending.add(executor.submit(run_chunk, queue.popleft()))
            helping = starting and len(queue) > 0
            finished, pending = wait(
                pending, timeout=0 if helping else None, return_when=FIRST_COMPLETED
            )
            starting = starting and not finished
            for future in finished:
                collect(*future.result())
            if helping and starting:
                collect(*run_chunk(queue.pop()))
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


#: what the fork server imports once, before it forks the workers (and the CLI,
#: when it is what runs: :func:`_pool_context`)
FORKSERVER_PRELOAD = [__name__, "vmss_rollout.strategies.builtin", "simpy", "importlib.metadata"]
_CLI = "vmss_rollout.cli.app"


def _pool_context() -> Any:
    """Where the pool's workers come from. Not a fork of this process: it may
    run threads (rich's progress bar refreshes from one), and forking a
    threaded process is unsafe. A fork server where the OS has one (Linux,
    macOS): a single-threaded process started once per parent, which imports
    the simulator once (:data:`FORKSERVER_PRELOAD`) and forks each worker from
    itself. A worker still runs the parent's ``__main__`` again, as with spawn
    (Python 3.11-3.13's fork server does not preload it: its ``main_path`` is
    never filled in, ``multiprocessing/forkserver.py``); for the ``vmss-rollout``
    script that is one import of the CLI, which the server has made already.
    With spawn (Windows) every worker is a fresh interpreter that imports all of
    it, typer and rich included: about 0.2 s of CPU per worker.
    https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods"""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    cli = [_CLI] if _CLI in sys.modules else []
    context.set_forkserver_preload([*FORKSERVER_PRELOAD, *cli])
    return context


def _worker_init() -> None:
    """Ctrl-C reaches every process of the terminal's group: only the parent
    handles it (it cancels what has not started; chunks are short)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_on_dask(address: str, studies: Sequence[Study], collect: _Collect) -> None:
    try:
        # typed as Any: distributed's own annotations vary between releases
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        raise InputError(DASK_EXTRA_MESSAGE) from None
    client = _connect(distributed, address)
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError):
            raise InputError(
                f"--dask {address}: the scheduler has no workers "
                f"(none joined within {CONNECT_TIMEOUT_S:g}s)"
            ) from None
        info = client.scheduler_info()
        slots = sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())
        futures = [
            client.submit(run_chunk, chunk, pure=False)
            for chunk in plan_chunks(studies, max(1, slots))
        ]
        try:
            for future in distributed.as_completed(futures, loop=client.loop):
                collect(*_dask_result(future, address))
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()


def _connect(distributed: Any, address: str) -> Any:
    """A client of the scheduler at ``address``, or a one-line InputError."""
    try:
        return distributed.Client(
            address, timeout=CONNECT_TIMEOUT_S, set_as_default=False, asynchronous=False
        )
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > 160:
            reason = reason[:157] + "..."
        if isinstance(exc, ValueError | TypeError):  # a malformed address
            raise InputError(f"--dask {address}: {reason}") from None
        raise InputError(f"--dask {address}: cannot reach the Dask scheduler ({reason})") from None


def _dask_result(future: Any, address: str) -> tuple[int, int, list[RunResult]]:
    try:
        index, start, results = future.result()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "vmss_rollout":
            raise InputError(
                f"--dask {address}: the Dask workers cannot import vmss_rollout; "
                "install vmss-rollout (same version) where they run"
            ) from None
        raise
    return int(index), int(start), list(results)
