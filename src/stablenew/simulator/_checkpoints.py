"""The one checkpoint a simulated WebUI holds loaded, and the time A1111 takes to swap it for another."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from ._api import Dropped
from ._catalog import Catalog


class LoadedCheckpoint:
    """The loaded checkpoint (by title); :meth:`load` swaps it, waiting the swap time first.

    ``swap_seconds`` is how long loading any other checkpoint takes, ``swap_seconds_by_model`` overrides it
    per checkpoint, named as A1111 names one (title, file name, model name or hash). Thread-safe; the caller
    holds the generation lock, so swaps never overlap (one model in memory, as A1111 by default).

    Raises:
        ValueError: a negative time, or a name the catalog does not hold.
    """

    def __init__(
        self,
        catalog: Catalog,
        stopping: threading.Event,
        swap_seconds: float = 0.0,
        swap_seconds_by_model: Mapping[str, float] | None = None,
    ) -> None:
        self._stopping = stopping
        self._default = float(swap_seconds)
        self._by_title: dict[str, float] = {}
        for name, seconds in (swap_seconds_by_model or {}).items():
            found = catalog.find_checkpoint(name, fuzzy=False)
            if found is None:
                known = ", ".join(m["title"] for m in catalog.models)
                raise ValueError(f"no checkpoint named {name!r} to give a swap time (known: {known})")
            self._by_title[str(found["title"])] = float(seconds)
        if min((self._default, *self._by_title.values())) < 0:
            raise ValueError("swap seconds must not be negative")
        self._lock = threading.Lock()
        self._history: list[str] = [str(catalog.models[0]["title"])]

    def swap_seconds(self, title: str) -> float:
        """How long loading ``title`` takes."""
        return self._by_title.get(title, self._default)

    def load(self, title: str) -> None:
        """Make ``title`` the loaded checkpoint, first waiting its swap time unless it is loaded already.

        Raises:
            Dropped: the simulator stopped during the wait.
        """
        with self._lock:
            if self._history[-1] == title:
                return
        seconds = self.swap_seconds(title)
        if seconds > 0 and self._stopping.wait(seconds):
            raise Dropped
        with self._lock:
            self._history.append(title)

    @property
    def title(self) -> str:
        """The title of the checkpoint loaded now."""
        with self._lock:
            return self._history[-1]

    @property
    def history(self) -> list[str]:
        """Every checkpoint loaded, in order: the one loaded at start, then one per swap."""
        with self._lock:
            return list(self._history)
