"""Where trials run: a local process pool (the default: nothing to start) or Ray (``--ray``).

Both take a trial (:func:`edgekit.search.trial.run_trial` with plain data), run it somewhere and
hand back ``(trial number, result)`` as trials finish, so the study loop does not care where a
build ran. A trial whose worker dies (killed, out of memory, a lost Ray node) comes back as an
``{"error": ...}`` result: the search records it and goes on.

Ray is used rather than a scheduler of our own: it already starts a local runtime or joins a
cluster, places tasks by declared CPUs (and custom resources such as a device name), and
reports a crashed task as an exception instead of hanging. It is an optional extra
(``edgekit[ray]``), imported only here.
"""
from __future__ import annotations

import multiprocessing
import re
import socket
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from edgekit.errors import UnsupportedError
from edgekit.search.trial import limit_threads, run_trial, thread_env

#: ``--ray`` without an address: start a Ray runtime on this machine for the search
RAY_LOCAL = "local"


class TrialPool(Protocol):
    """Runs trials; ``finished()`` blocks until at least one is done; ``where`` says where."""

    where: str

    def submit(self, job: dict[str, Any], number: int, overlay: dict[str, Any]) -> None: ...

    def running(self) -> int: ...

    def finished(self) -> list[tuple[int, dict]]: ...

    def close(self) -> None: ...

    def has_resource(self, name: str) -> bool: ...


class ProcessTrials:
    """``workers`` trials at once, each in a ``spawn`` child (no forked torch/TF state). A child
    that dies breaks a ``ProcessPoolExecutor`` for good, so the pool is replaced once the trials
    it held have been told as failed."""

    def __init__(self, workers: int, threads: int) -> None:
        self._workers, self._threads = workers, threads
        self._pool = self._new_pool()
        self._pending: dict[Future, int] = {}
        self.where = f"local process pool ({workers} workers)"

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self._workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=limit_threads, initargs=(self._threads,))

    def submit(self, job: dict[str, Any], number: int, overlay: dict[str, Any]) -> None:
        try:
            future = self._pool.submit(run_trial, job, number, overlay)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            future = self._pool.submit(run_trial, job, number, overlay)
        self._pending[future] = number

    def running(self) -> int:
        return len(self._pending)

    def finished(self) -> list[tuple[int, dict]]:
        done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
        return [(self._pending.pop(f), _future_result(f)) for f in done]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def has_resource(self, name: str) -> bool:
        """A local pool has no device nodes."""
        return False


def _future_result(future: Future) -> dict:
    try:
        return future.result()
    except Exception as exc:  # a worker that died (killed, out of memory) fails its trial only
        return {"error": f"worker died: {type(exc).__name__}: {exc}"}


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise UnsupportedError("edgekit search --ray needs Ray", "pip install 'edgekit[ray]' (or drop --ray)") from None
    return ray


class RayTrials:
    """One Ray task per trial, ``threads`` CPUs declared for each (and its thread pools capped
    to them); ``address`` :data:`RAY_LOCAL` starts a runtime here with ``workers * threads``
    CPUs, anything else joins that cluster. A runtime this class started is shut down by
    :meth:`close`; one already running in the process is used as it is (and left running)."""

    def __init__(self, address: str, workers: int, threads: int = 1) -> None:
        self._ray = ray = ray_module()
        self._started = not ray.is_initialized()
        if self._started:
            _init(ray, address, workers * threads)
        self._task = ray.remote(num_cpus=threads, max_retries=0, runtime_env={"env_vars": thread_env(threads)})(run_trial)
        self._pending: dict[Any, int] = {}
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cluster = "local Ray runtime" if address == RAY_LOCAL else f"Ray cluster {address}"
        self.where = f"{cluster} ({len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs)"

    def submit(self, job: dict[str, Any], number: int, overlay: dict[str, Any]) -> None:
        self._pending[self._task.remote(job, number, overlay)] = number

    def has_resource(self, name: str) -> bool:
        """Whether a node of the cluster advertises the custom resource ``name`` (a device)."""
        return self._ray.cluster_resources().get(name, 0) >= 1

    def running(self) -> int:
        return len(self._pending)

    def finished(self) -> list[tuple[int, dict]]:
        ready, _ = self._ray.wait(list(self._pending), num_returns=1)
        return [(self._pending.pop(ref), self._get(ref)) for ref in ready]

    def _get(self, ref: Any) -> dict:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # the task crashed or its node was lost
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return {"error": f"Ray task failed: {type(exc).__name__}: {first[:300]}"}

    def close(self) -> None:
        for ref in self._pending:
            self._ray.cancel(ref, force=True)
        if self._started:
            self._ray.shutdown()


def _init(ray: Any, address: str, cpus: int) -> None:
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == RAY_LOCAL:
        ray.init(num_cpus=cpus, **quiet)
        return
    check_reachable(address)  # ray.init retries an absent head for minutes before it gives up
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise _cannot_join(address, str(exc).splitlines()[0]) from None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) nothing listens on, in seconds."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if match is None:
        raise UnsupportedError(f"cannot read --ray {address!r}", "give the head's HOST:PORT (e.g. 10.0.0.5:6379), or --ray alone")
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout_s).close()
    except OSError as exc:
        raise _cannot_join(address, exc.strerror or type(exc).__name__) from None


def _cannot_join(address: str, why: str) -> UnsupportedError:
    return UnsupportedError(f"cannot join the Ray cluster at {address}: {why}",
                            "start one with `ray start --head` and pass its HOST:PORT, or use --ray alone for a local runtime")


def open_pool(ray_address: str | None, workers: int, threads: int = 1) -> TrialPool:
    """The pool ``edgekit search`` runs its trials in, ``threads`` CPU threads per trial."""
    if ray_address is None:
        return ProcessTrials(workers, threads)
    return RayTrials(ray_address, workers, threads)
