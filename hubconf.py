"""PyTorch Hub entry points.

    import torch
    model = torch.hub.load('path/to/this/repo', 'custom', path='best.pt', source='local')
    model = torch.hub.load('path/to/this/repo', 'yolov5s', source='local')            # official v7.0 weights
    model = torch.hub.load('path/to/this/repo', 'yolov5s', pretrained=False, classes=3, source='local')
    results = model('data/images/shapes1.jpg')
    results.print()

    python hubconf.py --model yolov5n     # predict on data/images
"""

from utils.hub.create import create as _create
from utils.hub.create import custom  # noqa: F401  (an entry point)

dependencies = ["torch", "numpy", "cv2", "yaml"]  # torch.hub checks these import before loading


def _entry(name: str):
    """An entry point for the model `name` (pretrained=True: official weights, downloaded when missing)."""
    def entry(pretrained: bool = True, channels: int = 3, classes: int | None = None, autoshape: bool = True,
              _verbose: bool = True, device=None):
        return _create(name, pretrained, channels, classes, autoshape, _verbose, device)

    entry.__name__ = entry.__qualname__ = name.replace("-", "_")
    nc = 1000 if name.endswith("-cls") else 80
    entry.__doc__ = (f"{name}: official YOLOv5 v7.0 weights when pretrained (fetched if missing, one clear error "
                     f"offline), random weights otherwise; channels and classes (default {nc}) size the model.")
    return entry


yolov5n, yolov5s, yolov5m = _entry("yolov5n"), _entry("yolov5s"), _entry("yolov5m")
yolov5l, yolov5x = _entry("yolov5l"), _entry("yolov5x")
yolov5n6, yolov5s6, yolov5m6 = _entry("yolov5n6"), _entry("yolov5s6"), _entry("yolov5m6")
yolov5l6, yolov5x6 = _entry("yolov5l6"), _entry("yolov5x6")
yolov5n_seg, yolov5s_seg, yolov5m_seg = _entry("yolov5n-seg"), _entry("yolov5s-seg"), _entry("yolov5m-seg")
yolov5l_seg, yolov5x_seg = _entry("yolov5l-seg"), _entry("yolov5x-seg")
yolov5n_cls, yolov5s_cls, yolov5m_cls = _entry("yolov5n-cls"), _entry("yolov5s-cls"), _entry("yolov5m-cls")
yolov5l_cls, yolov5x_cls = _entry("yolov5l-cls"), _entry("yolov5x-cls")


if __name__ == "__main__":
    import argparse

    from utils.engine.cli import run_main
    from utils.paths import ROOT

    entries = sorted(k for k, v in globals().items() if callable(v) and getattr(v, "__name__", "") == k
                     and k.startswith("yolov5"))
    parser = argparse.ArgumentParser(description="Load a hub model and predict on data/images")
    parser.add_argument("--model", type=str, default="yolov5s", choices=entries, help="entry point name")
    opt = parser.parse_args()

    def main() -> None:
        model = globals()[opt.model]()
        model(sorted(str(p) for p in (ROOT / "data/images").glob("*.jpg"))).print()

    run_main(main)
