"""``progress_bar``: tqdm's bar when it is shown, else a silent stand-in, so that a command run without a
bar (``--no-progress``, ``-q``) does not import tqdm (``tqdm.auto`` imports asyncio: about 0.15 s of a
one-file ``index build``)."""

from __future__ import annotations

from typing import Any


class SilentBar:
    """What the callers use of a tqdm bar (``update``, a context manager), showing nothing."""

    def __init__(self, total: int | None = None) -> None:
        self.total, self.n = total, 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(total: int | None, enabled: bool, **kwargs: Any) -> Any:
    """A tqdm bar over ``total`` items (``kwargs`` go to tqdm) when ``enabled``, else a ``SilentBar``."""
    if not enabled:
        return SilentBar(total)
    from tqdm.auto import tqdm

    return tqdm(total=total, **kwargs)
