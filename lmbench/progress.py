"""Progress bars (tqdm on stderr). Disabled bars keep the same interface."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
        file=sys.stderr,
        disable=not enabled,
    )
