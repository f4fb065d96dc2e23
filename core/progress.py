"""How long work reports how far it got: ``progress(stage, done, total)``.

The library only calls the function it is given; the CLI plugs a tqdm bar in (``tqdm_progress``), the app a
Streamlit progress bar, the tests nothing (``no_progress``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    return None


def tqdm_progress() -> Progress:
    """One tqdm bar per stage on stderr, closed when the stage is done (what the CLI shows)."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="img" if stage.startswith("Embed") else "step",
                                     file=sys.stderr, mininterval=1.0)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress
