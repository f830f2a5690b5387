"""Progress bars (tqdm on stderr). Disabled bars keep the same interface."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class _Bar(tqdm):
    """A tqdm bar that draws its final count before it closes: with the default refresh interval the
    last update is often not drawn, and a log of the bar then ends at 399/400."""

    def close(self) -> None:
        if not self.disable and self.n != self.last_print_n:
            self.refresh()
        super().close()


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    return _Bar(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=total is None or total >= 10_000,  # 930k tokens, but 400 steps, not 400.00
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
        file=sys.stderr,
        disable=not enabled,
    )
