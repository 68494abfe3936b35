"""Convert a Cityscapes download into YOLO box labels, train-id masks and a ready data YAML.

    python data/scripts/cityscapes_to_yolo.py ROOT            # ROOT holds leftImg8bit/ and gtFine/
    python data/scripts/cityscapes_to_yolo.py --root ROOT --min-size 4 --workers 8
    python train.py --data ROOT/cityscapes.yaml ...

Rules (which classes, polygons vs instanceIds, groups, minimum size): utils/tasks/semantic/cityscapes.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from utils.data.dataset_config import DatasetError  # noqa: E402
from utils.engine.cli import run_main  # noqa: E402
from utils.tasks.semantic.cityscapes import SOURCES, ConvertOptions, Report, convert  # noqa: E402
from utils.tasks.semantic.labels import DETECTION_CLASSES  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the converter's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root_pos", nargs="?", metavar="ROOT", help="Cityscapes folder (holds leftImg8bit/ and gtFine/)")
    p.add_argument("--root", help="Cityscapes folder (same as the positional ROOT)")
    p.add_argument("--classes", nargs="+", default=list(DETECTION_CLASSES),
                   help="Cityscapes label names to box, in class-id order (default: the 10 object classes)")
    p.add_argument("--min-size", type=float, default=1.0, help="drop boxes narrower or lower than this (pixels)")
    p.add_argument("--keep-groups", action="store_true", help="box group regions (cargroup, ...) as their class")
    p.add_argument("--source", choices=SOURCES, default="auto",
                   help="boxes from polygons JSON, instanceIds PNG, or auto (polygons, else instanceIds)")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing _gtFine_labelTrainIds.png masks")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: convert in this process)")
    opt = p.parse_args(argv)
    if opt.root and opt.root_pos and Path(opt.root) != Path(opt.root_pos):
        p.error("ROOT given twice with different values")
    opt.root = opt.root or opt.root_pos
    if not opt.root:
        p.error("the Cityscapes folder is required: cityscapes_to_yolo.py ROOT")
    return opt


def main(opt: argparse.Namespace) -> Report:
    """Run the conversion; nothing converted at all is an error (exit 1), problems with some frames are not."""
    try:
        options = ConvertOptions(classes=tuple(opt.classes), min_size=opt.min_size, keep_groups=opt.keep_groups,
                                 source=opt.source, overwrite=opt.overwrite, workers=opt.workers)
        report = convert(opt.root, options)
    except ValueError as e:  # bad --classes / --source, or an unusable tree: one line, no traceback
        raise DatasetError(str(e)) from None
    if not report.n_converted:
        raise DatasetError(f"{opt.root}: no frame could be converted ({len(report.problems)} problem(s) above)")
    return report


if __name__ == "__main__":
    run_main(main, parse_opt())
