"""The batch runner: make a whole folder of AI-generated faces (``fakeface-generate``).

:func:`fakeface.generation.plan.plan_generation` gives a deterministic plan;
:func:`run_generation` makes what is not done yet with bounded concurrency,
classified errors and retries, a cost guard, and a crash-safe ``manifest.jsonl``.
Look-alikes of real faces go through ``images.edit`` (:mod:`fakeface.generation.images`).

Never lose a paid image: every planned image has a deterministic id. Its file is
written atomically (temporary file, fsync, rename) *before* its manifest line is
appended, so a run killed at any moment leaves at worst an image without a line;
the next run of the same command adopts it (after checking it decodes) instead
of paying for it again, and skips everything already done.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fakeface.utils.fileio import TEMP_MARK, write_atomic
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.generation.client import (
    DEFAULT_TIMEOUT_S, ContentRefusedError, GenerationError, RateLimitedError, RequestRejectedError,
    ServiceUnavailableError, create_openai_client, resolve_api_key,
)
from fakeface.generation.images import IMAGE_EXTENSIONS, GeneratedImage, ImageRequest, call_images_api, prepare_reference
from fakeface.generation.manifest import ManifestRecord, ManifestWriter, load_manifest, utc_timestamp
from fakeface.generation.plan import PlannedImage

from tqdm.auto import tqdm

__all__ = ["GenerationSummary", "run_generation"]

log = logging.getLogger(__name__)

@contextlib.contextmanager
def _exclusive_run(out_dir: Path) -> Iterator[None]:
    """One run per output folder at a time (the lock dies with the process, even on SIGKILL)."""
    import fcntl

    handle = open(out_dir / ".generate.lock", "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another generation run is writing to {out_dir}; wait for it to finish") from None
        yield
    finally:
        handle.close()



# --------------------------------------------------------------------------- the run


@dataclass
class GenerationSummary:
    """What a run did; ``format()`` is the end-of-run report."""

    planned: int = 0               # images in the plan
    already_done: int = 0          # done before this run: an ok or refused line in manifest.jsonl
    adopted: int = 0               # files an interrupted run wrote but did not record, recorded now
    ok: int = 0                    # generated and saved by this run
    refused: int = 0               # refused by the service: final, never retried
    failed: int = 0                # failed in this run; the next run retries them
    not_attempted: int = 0         # not reached before the run stopped
    capped: int = 0                # left for a later run by --max-images
    missing_files: int = 0         # manifest lines whose image file is gone (not regenerated)
    requests: int = 0              # API calls, repeats included
    retries: int = 0               # calls that repeat a failed attempt
    rate_limit_wait_s: float = 0.0  # waiting out rate limits
    errors: Counter = field(default_factory=Counter)        # kind -> count of failed attempts
    stopped: str | None = None                              # why the run stopped early
    stopped_kind: str | None = None
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every planned image is now done (ok or refused)."""
        return self.already_done + self.adopted + self.ok + self.refused == self.planned

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = dict(self.errors)
        out["complete"] = self.complete
        return out

    def format(self) -> str:
        lines = [
            f"planned {self.planned}: {self.already_done} already done, {self.adopted} adopted from an "
            f"interrupted run, {self.ok} generated, {self.refused} refused, {self.failed} failed, "
            f"{self.capped} left by --max-images, {self.not_attempted} not attempted",
            f"API requests {self.requests} (retries {self.retries}), waited {self.rate_limit_wait_s:.1f} s "
            f"for rate limits, {self.elapsed_s:.1f} s in all",
        ]
        if self.errors:
            lines.append("errors: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.errors.items())))
        if self.missing_files:
            lines.append(f"warning: {self.missing_files} manifest entries point to files that are gone "
                         "(not regenerated; delete their lines to make them again)")
        if self.stopped:
            lines.append(f"STOPPED: {self.stopped}")
        elif self.failed:
            lines.append("Run the same command again to retry the failed images.")
        return "\n".join(lines)


@dataclass
class _RetryPolicy:
    max_attempts: int = 3              # per image, for timeouts / connection / 5xx
    max_rate_limit_waits: int = 8      # per image
    backoff_s: float = 2.0             # first wait after a transient failure, doubled each time
    max_backoff_s: float = 30.0
    default_retry_after_s: float = 10.0
    max_retry_after_s: float = 120.0   # cap on any server-requested wait


def _reconcile(out_dir: Path, plan: Sequence[PlannedImage], summary: GenerationSummary,
               manifest: ManifestWriter) -> set[str]:
    """Ids already done, after removing temp files and adopting paid images that lack a line."""
    for temp in out_dir.glob(f".*{TEMP_MARK}*"):
        log.info("removing %s left by an interrupted run", temp.name)
        temp.unlink(missing_ok=True)
    by_id: dict[str, ManifestRecord] = {}
    for record in load_manifest(out_dir):
        # An "ok" or "refused" line is final; a later "failed" never overrides it.
        if record.id in by_id and by_id[record.id].final:
            continue
        by_id[record.id] = record
    done: set[str] = set()
    for item in plan:
        record = by_id.get(item.id)
        if record and record.status == "ok":
            done.add(item.id)
            if not (out_dir / str(record.file)).is_file():
                summary.missing_files += 1
            continue
        if record and record.status == "refused":
            done.add(item.id)
            continue
        orphans = [f for f in out_dir.glob(f"{item.id}.*") if f.suffix in IMAGE_EXTENSIONS.values()]
        for orphan in sorted(orphans):
            try:
                decoded = load_image(orphan)
            except ImageDecodeError as error:
                # Cannot happen with atomic writes unless the disk lies; keep the
                # bytes for inspection but out of the dataset's way.
                log.warning("%s does not decode (%s); moved aside and regenerated", orphan.name, error)
                orphan.rename(orphan.with_name(f".{orphan.name}.corrupt"))
                continue
            stat = orphan.stat()
            manifest.append(ManifestRecord.for_item(
                item, status="ok", file=orphan.name, adopted=True, width=decoded.width, height=decoded.height,
                fmt=decoded.format, nbytes=stat.st_size,
                created_at=utc_timestamp(datetime.fromtimestamp(stat.st_mtime, timezone.utc))))
            summary.adopted += 1
            done.add(item.id)
            break
    summary.already_done = len(done) - summary.adopted
    return done


def run_generation(
    plan: Sequence[PlannedImage],
    out_dir: str | os.PathLike,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    env_file: str | os.PathLike | None = ".env",
    concurrency: int = 4,
    max_images: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_attempts: int = 3,
    max_retry_after_s: float = 120.0,
    backoff_s: float = 2.0,
    max_consecutive_failures: int = 10,
    sleep: Callable[[float], None] | None = None,
    progress: bool = True,
    client=None,
) -> GenerationSummary:
    """Make the planned images in ``out_dir`` that are not there yet; returns the summary.

    Skips images already in ``manifest.jsonl`` (ok or refused), adopts image files
    an interrupted run wrote but did not record, then calls the API for at most
    ``max_images`` of the rest, ``concurrency`` at a time. Per image: rate limits
    wait ``retry-after`` (capped at ``max_retry_after_s``) and retry; timeouts,
    dropped connections and 5xx retry up to ``max_attempts`` with exponential
    back-off; refusals are recorded as ``refused``; anything else as ``failed``
    (retried by the next run). An invalid key, permission denied or exhausted
    quota stops the run at once (images in flight are still saved), as do
    ``max_consecutive_failures`` failures in a row (a cost guard against a
    misconfigured run). Waits end early when the run stops; ``sleep`` replaces them
    so tests need not wait. Ctrl-C stops the run after the requests in flight
    have finished and been saved (they are paid for).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not 1 <= concurrency <= 32:
        raise ValueError(f"--concurrency must be between 1 and 32, got {concurrency}")
    if max_images is not None and max_images < 0:
        raise ValueError(f"--max-images must be >= 0, got {max_images}")
    ids = [p.id for p in plan]
    if len(set(ids)) != len(ids):
        raise ValueError("the plan has duplicate image ids")
    policy = _RetryPolicy(max_attempts=max_attempts, backoff_s=backoff_s, max_retry_after_s=max_retry_after_s)
    summary = GenerationSummary(planned=len(plan))
    started = time.monotonic()
    with _exclusive_run(out):
        manifest = ManifestWriter(out)
        done = _reconcile(out, plan, summary, manifest)
        todo = [p for p in plan if p.id not in done]
        if max_images is not None and len(todo) > max_images:
            summary.capped = len(todo) - max_images
            todo = todo[:max_images]
        if todo:
            own_client = client is None
            key = None
            if own_client:
                key = resolve_api_key(api_key, env_file=env_file)   # fail before any work if missing
                client = create_openai_client(key, base_url=base_url, timeout=timeout, env_file=None)
            try:
                _Runner(client, key or api_key, out, manifest, summary, policy, sleep, timeout,
                        max_consecutive_failures).run(todo, concurrency=concurrency, progress=progress)
            finally:
                if own_client:
                    client.close()
    summary.not_attempted = summary.planned - (summary.already_done + summary.adopted + summary.ok
                                               + summary.refused + summary.failed + summary.capped)
    summary.elapsed_s = time.monotonic() - started
    return summary


class _Runner:
    """The worker pool of one run: requests, retries, saving, counting."""

    def __init__(self, client, api_key: str | None, out: Path, manifest: ManifestWriter, summary: GenerationSummary,
                 policy: _RetryPolicy, sleep: Callable[[float], None] | None, timeout: float,
                 max_consecutive_failures: int):
        self.client, self.api_key, self.out, self.manifest = client, api_key, out, manifest
        self.summary, self.policy, self.timeout = summary, policy, timeout
        self.max_consecutive_failures = max_consecutive_failures
        self.stop = threading.Event()
        self.sleep = sleep or self.stop.wait       # a stop cuts back-off and rate-limit waits short
        self.lock = threading.Lock()
        self.consecutive_failures = 0
        self.gate_until = 0.0          # monotonic time before which nobody calls (rate limit)
        self.bar = None

    def run(self, todo: Sequence[PlannedImage], *, concurrency: int, progress: bool) -> None:
        if progress:
            self.bar = tqdm(total=len(todo), desc="generating", unit="img", dynamic_ncols=True)
            self._show()
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fakeface-gen")
        futures: dict[Future, PlannedImage] = {}
        try:
            # Submit lazily so a stop leaves the rest un-attempted instead of queued.
            # The first image goes alone: a bad key, missing permission or empty
            # quota then costs one call, not `concurrency` of them.
            for position, item in enumerate(todo):
                while len(futures) >= (1 if position == 1 else concurrency):
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        futures.pop(future)
                        future.result()
                if self.stop.is_set():
                    break
                futures[pool.submit(self._make, item)] = item
            for future in list(futures):
                future.result()
        except KeyboardInterrupt:
            # Requests in flight are paid for: let them finish and be saved, then report.
            self._halt(None, "interrupted (Ctrl-C); every image received was saved; run the same command to continue",
                       kind="interrupted")
            log.warning("interrupted: waiting for the requests in flight to finish and be saved")
            wait(futures)
        except BaseException:
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if self.bar is not None:
                self.bar.close()

    def _show(self) -> None:
        if self.bar is not None:
            s = self.summary
            self.bar.set_postfix(done=s.ok, refused=s.refused, failed=s.failed, refresh=False)

    def _wait_for_gate(self) -> None:
        with self.lock:
            remaining = self.gate_until - time.monotonic()
        if remaining > 0:
            self.sleep(remaining)

    def _make(self, item: PlannedImage) -> None:
        if self.stop.is_set():
            return
        try:
            request = ImageRequest(item.prompt, item.model, item.size, item.quality, dict(item.attributes),
                               prepare_reference(item.source_path, Path(item.source_path).name)
                               if item.source_path else None)
        except (OSError, ImageDecodeError) as error:
            self._finish(item, "failed", error=RequestRejectedError(
                f"the real image {item.source_path} cannot be used: {error}"))
            return
        attempts = rate_waits = 0
        while True:
            if self.stop.is_set():
                return
            self._wait_for_gate()
            attempts += 1
            with self.lock:
                self.summary.requests += 1
                if attempts > 1:
                    self.summary.retries += 1
            try:
                image = call_images_api(self.client, request, api_key=self.api_key, timeout=self.timeout)
            except GenerationError as error:
                with self.lock:
                    self.summary.errors[error.kind] += 1
                if error.fatal:
                    self._halt(error)
                    return
                if isinstance(error, ContentRefusedError):
                    self._finish(item, "refused", error=error)
                    return
                if isinstance(error, RateLimitedError) and rate_waits < self.policy.max_rate_limit_waits:
                    rate_waits += 1
                    attempts -= 1              # a rate-limit wait is not a failed attempt
                    delay = min(error.retry_after if error.retry_after is not None
                                else self.policy.default_retry_after_s, self.policy.max_retry_after_s)
                    with self.lock:
                        self.gate_until = max(self.gate_until, time.monotonic() + delay)
                        self.summary.rate_limit_wait_s += delay
                    log.info("rate limited; waiting %.1f s", delay)
                    self.sleep(delay)
                    continue
                if isinstance(error, ServiceUnavailableError) and attempts < self.policy.max_attempts:
                    delay = min(self.policy.backoff_s * 2 ** (attempts - 1), self.policy.max_backoff_s)
                    log.info("%s; retry %d in %.1f s", error.message, attempts, delay)
                    self.sleep(delay)
                    continue
                self._finish(item, "failed", error=error)
                return
            self._save(item, image)
            return

    def _save(self, item: PlannedImage, image: GeneratedImage) -> None:
        name = item.id + image.extension
        # Order is the whole safety story: the file is complete on disk before the
        # line that says it is done, so a kill between the two loses nothing.
        write_atomic(self.out / name, image.data)
        self.manifest.append(ManifestRecord.for_item(item, status="ok", file=name, image=image))
        self._finish(item, "ok")

    def _finish(self, item: PlannedImage, status: str, *, error: GenerationError | None = None) -> None:
        if status != "ok":
            self.manifest.append(ManifestRecord.for_item(item, status=status, error=error))
        with self.lock:
            setattr(self.summary, status, getattr(self.summary, status) + 1)
            self.consecutive_failures = self.consecutive_failures + 1 if status == "failed" else 0
            too_many = self.consecutive_failures >= self.max_consecutive_failures
            if self.bar is not None:
                self.bar.update(1)
                self._show()
        if status == "failed":
            log.warning("image %s failed: %s", item.id, error.message if error else "")
        if too_many:
            self._halt(None, f"{self.max_consecutive_failures} images failed in a row; stopped to save money "
                             f"(last error: {error.message if error else 'unknown'})", kind="too_many_failures")

    def _halt(self, error: GenerationError | None, reason: str | None = None, *, kind: str | None = None) -> None:
        with self.lock:
            if self.summary.stopped is None:
                self.summary.stopped = reason or error.message
                self.summary.stopped_kind = kind or (error.kind if error else "too_many_failures")
        self.stop.set()
