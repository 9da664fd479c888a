"""Keeps the newest export version loaded, swapping without a pause.

A background thread looks for a newer version directory every few
seconds. A newer one is loaded and warmed up in full while the old one
keeps answering; then one reference assignment makes it current. A
request takes the reference once at its start, so it is answered by a
single version from start to end, and the old version is freed when the
last request holding it returns.
"""

from __future__ import annotations

import logging
import pathlib
import threading

from serving import export_dir
from serving.recommender import Recommender

logger = logging.getLogger(__name__)

MAX_LOAD_ATTEMPTS = 3


class ModelHolder:
    """The current Recommender of an export directory.

    Args:
      path: EXPORT_DIR.
      version: pin one version (no reloading); None follows the newest.
      poll_interval_s: seconds between checks; 0 or less disables them.
    """

    def __init__(
        self,
        path: str | pathlib.Path,
        version: int | None = None,
        poll_interval_s: float = 5.0,
    ):
        self.path = pathlib.Path(path)
        self.pinned = version is not None
        self.poll_interval_s = poll_interval_s
        self._current = Recommender.load(self.path, version)
        self._failures: dict[int, int] = {}
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Recommender:
        return self._current

    def check_for_update(self) -> bool:
        """Loads and swaps in a newer version if there is one.

        Returns:
          True if a new version became current.
        """
        if self.pinned:
            return False
        with self._lock:
            newest = export_dir.newest_version(self.path)
            if (
                newest is None
                or newest <= self._current.version
                or self._failures.get(newest, 0) >= MAX_LOAD_ATTEMPTS
            ):
                return False
            try:
                fresh = Recommender.load(self.path, newest)
            except Exception:
                # Keep serving the old version: a broken export must not
                # take the server down. A few retries cover a version
                # caught while still being copied in; then it is skipped.
                logger.exception(
                    "version %d in %s failed to load; still serving %d",
                    newest,
                    self.path,
                    self._current.version,
                )
                self._failures[newest] = self._failures.get(newest, 0) + 1
                return False
            old = self._current.version
            self._current = fresh
            logger.info("now serving version %d (was %d)", newest, old)
            return True

    def start(self) -> None:
        """Starts the background poll (no-op if pinned or disabled)."""
        if self.pinned or self.poll_interval_s <= 0 or self._thread:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, name="export-poll", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.check_for_update()
            except Exception:
                logger.exception("checking %s for a new version", self.path)
