"""results.csv in YOLOv5's layout: '%20s,'-padded header, '%20.5g,' values, one row per epoch."""

from __future__ import annotations

from pathlib import Path

from utils.log import LOGGER


class ResultsLog:
    """Append-only results.csv; an existing file (resume) is continued, not overwritten."""

    def __init__(self, path: Path, columns: list[str], width: int = 20):
        self.path, self.columns, self.width = Path(path), ["epoch", *columns], width

    def append(self, epoch: int, values: list[float]) -> dict[str, float]:
        """Write one epoch's row (the header first when the file is new); returns it keyed by column name."""
        if len(values) != len(self.columns) - 1:
            raise ValueError(f"results row has {len(values)} values for {len(self.columns) - 1} columns")
        w = self.width
        header = "" if self.path.exists() else (
            (f"%{w}s," * len(self.columns)) % tuple(self.columns)).rstrip(",") + "\n"
        row = ((f"%{w}.5g," * len(self.columns)) % (epoch, *values)).rstrip(",") + "\n"
        with open(self.path, "a") as f:
            f.write(header + row)
        return dict(zip(self.columns[1:], values))

    def plot(self) -> None:
        """results.png next to the csv."""
        try:
            from utils.plots import plot_results

            plot_results(self.path)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished training run
            LOGGER.warning(f"WARNING ⚠️ could not plot {self.path}: {e}")
