"""The pages of a batch run decoded by a pool of Ray actors, through a Ray Data pipeline:

    the pages to do (the driver left out those done before)
      in groups of consecutive pages, tilepass-cli's passes (--images-per-pass: by default 4, or --parallel if
         larger), so that each page is encoded with the same companions as there and reads the same
      -> render (pypdfium2, a task per group, no CPU reserved: rendering is short beside decoding; at most one
         task per actor at a time)
      -> map_batches into a fixed pool of PageDecoder actors (each loads the GGUF files once, memory-mapped,
         and decodes a group per call: one vision pass, then batched decode)
      -> back to the driver, which writes the files (driver.py).

Without an address a local Ray is started on this machine (all its CPUs) and shut down at the end; with one
(``auto``, ``ray://host:10001``, ``host:6379``) the run joins that cluster, whose nodes must have tilepass
installed. A Ray that is already initialised in this process is used as it is. The pool follows the CPUs Ray
reports: ``actors = max(1, cpus // 4)`` (at most one per page, and per group), ``threads = cpus // actors``.

A failed actor (its process died) is restarted by Ray and its group of pages retried (``max_restarts``,
``max_task_retries``); a group that fails every retry is skipped (``max_errored_blocks``) and its pages are
recorded as failed by the driver, for the next run to do again. Ray is optional: ``pip install tilepass[ray]``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

from .settings import BatchError
from .work import PageDecoder, PageOut, render_batch

if TYPE_CHECKING:
    from .driver import Log, Run

EXTRA = "tilepass[ray]"
ACTOR_RESTARTS = 4  # a decoder process that dies is started again this many times
TASK_RETRIES = 3  # a group of pages is tried again this many times after its decoder died


class RayMissing(BatchError):
    """--ray without Ray installed."""


def require_ray() -> None:
    """RayMissing unless Ray and Ray Data can be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayMissing(f"--ray needs Ray Data, which cannot be imported here ({e}); install the ray extra: "
                         f"pip install '{EXTRA}'") from None


def local_runtime_env() -> dict[str, Any]:
    """The runtime environment of the workers of a Ray started here: this process's tilepass package first on
    their path (a checkout's ``encoder`` too), and the library it was told to use (TILEPASS_LIB)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = [package_parent, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env = {"PYTHONPATH": os.pathsep.join(path)}
    if os.environ.get("TILEPASS_LIB"):
        env["TILEPASS_LIB"] = os.environ["TILEPASS_LIB"]
    return {"env_vars": env}


def pool_size(cpus: float, n_pages: int, actors: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, threads per actor): the defaults follow the CPUs (max(1, cpus // 4) actors, at most one per page,
    and the CPUs shared among them); either may be given."""
    n_cpus = max(1, int(cpus))
    n_actors = max(1, min(actors or max(1, n_cpus // 4), max(1, n_pages)))
    return n_actors, threads or max(1, n_cpus // n_actors)


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A BatchError at once when nothing answers at a host:port address (ray.init would keep retrying it for
    minutes); "auto" and other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BatchError(f"cannot join the Ray cluster at {address}: nothing answers there "
                         f"({e.strerror or type(e).__name__})") from None


def ray_pages(run: "Run", address: str | None, actors: int | None, threads: int | None,
              log: "Log") -> tuple[Generator[PageOut, None, None], int, int]:
    """The pages of run decoded by Ray actors, as they come (not in order); (pages, actors, threads)."""
    import ray

    from ..cli import _parallel, pages_per_pass
    from .driver import kill_hook

    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING)
        try:
            if address is None:
                ray.init(num_cpus=os.cpu_count() or 1, runtime_env=local_runtime_env(), **kwargs)
            else:
                check_reachable(address)
                ray.init(address=address, **kwargs)
        except Exception as e:  # ConnectionError (no cluster there), RuntimeError, ValueError (a bad address)
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise BatchError(f"cannot start or join {where}: {type(e).__name__}: {e}") from None
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        n_actors, n_threads = pool_size(cpus, len(run.todo), actors, threads)
        files = dataclasses.replace(run.spec.settings, model=os.path.abspath(run.spec.settings.model),
                                    mmproj=os.path.abspath(run.spec.settings.mmproj))  # the actors' own cwd
        spec = kill_hook(dataclasses.replace(run.spec, settings=files, threads=n_threads))
        parallel = _parallel(spec.settings.namespace([], "", False, threads=n_threads), run.pipe, n_threads)
        group = pages_per_pass(spec.settings.images_per_pass, parallel, len(run.todo))
        n_actors = min(n_actors, -(-len(run.todo) // group))  # no more actors than groups
        run.pipe = None  # the driver's models are not needed any more: the actors load their own
        log.info(f"Ray: {cpus:g} CPUs; {len(run.todo)} page{'s' if len(run.todo) != 1 else ''} to {n_actors} "
                 f"actor{'s' if n_actors != 1 else ''} x {n_threads} thread{'s' if n_threads != 1 else ''}, "
                 f"{group} page{'s' if group != 1 else ''} a call, up to {parallel} decoded together")
    except BaseException:
        if started:
            ray.shutdown()
        raise
    pages = _results(ray, run, spec, n_actors, min(float(n_threads), cpus / n_actors), group, started, log)
    return pages, n_actors, n_threads


def _results(ray: Any, run: "Run", spec: Any, n_actors: int, cpus_per_actor: float, group: int,
             started: bool, log: "Log") -> Generator[PageOut, None, None]:
    from .driver import end_kill_hook

    quiet = _QuietRayData()
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows its own progress
        ctx.max_errored_blocks = -1  # a group that fails every retry: its pages are missing, not the run
        ctx.execution_options.preserve_order = False
        groups = [run.todo[k:k + group] for k in range(0, len(run.todo), group)]  # tilepass-cli's passes
        ds = ray.data.from_items([{"group": g} for g in range(len(groups))], override_num_blocks=len(groups))
        # the workers open the files by absolute path (their working directory is not the driver's); the labels
        # in messages and page files stay the paths as given, as tilepass-cli writes them
        files = tuple(dataclasses.replace(d, path=os.path.abspath(d.path)) for d in spec.documents)
        ds = ds.map_batches(render_batch, fn_kwargs={"documents": files, "groups": groups, "dpi": run.args.dpi},
                            batch_size=1, batch_format="numpy", num_cpus=0,
                            compute=ray.data.TaskPoolStrategy(size=n_actors))  # a worker process each, reused
        with warnings.catch_warnings():
            # max_restarts / max_task_retries have no named parameter of map_batches (Ray 2.60 warns that extra
            # remote arguments are deprecated); without them Ray Data retries a failing group for ever
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ds.map_batches(PageDecoder, fn_constructor_kwargs={"spec": spec}, batch_size=1,
                                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_actors),
                                num_cpus=cpus_per_actor, max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)
        try:
            # block by block as each group is done (iter_rows would hold a block back until the next one came)
            for block in ds.iter_batches(batch_size=None, prefetch_batches=0, batch_format="numpy"):
                for result in block["result"]:
                    yield pickle.loads(result)
        except ray.exceptions.RayError as e:  # an actor that cannot start, a lost node ...: the pages written stay
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BatchError(f"the Ray pipeline failed ({type(e).__name__}: {first}); the pages written so far are "
                             "kept: run the same command again to do the rest") from None
    finally:
        quiet.restore()
        end_kill_hook(spec, log)
        if started:
            ray.shutdown()


class _QuietRayData(logging.Filter):
    """While a run executes: Ray Data's INFO lines (execution plan, start and end) and its note that progress
    bars are off are left out; its warnings and errors still show."""

    def __init__(self) -> None:
        super().__init__()
        self._logger = logging.getLogger("ray.data")
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)
        self._progress = logging.getLogger("ray.data._internal.progress")
        self._progress.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars")

    def restore(self) -> None:
        self._logger.setLevel(self._level)
        self._progress.removeFilter(self)


__all__ = ["EXTRA", "RayMissing", "local_runtime_env", "pool_size", "ray_pages", "require_ray"]
