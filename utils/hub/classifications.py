"""What the hub model returns for a classifier: per-image class probabilities, printed and drawn as top-5 lists."""

from __future__ import annotations

import numpy as np
import torch

from utils.hub.results import Results, _need_pandas
from utils.plots import Annotator


class Classifications(Results):
    """probs[i] is image i's (nc,) softmax over the classes; top5[i] its five most probable class ids, best first."""

    post_name = "post-process"
    kind = "classes"

    def __init__(self, ims: list[np.ndarray], probs: list[torch.Tensor], files: list[str], names: dict[int, str],
                 t: tuple[float, ...], shape: tuple[int, ...]):
        super().__init__(ims, files, names, t, shape)
        self.probs = probs
        self.top1 = [int(p.argmax()) for p in probs]
        self.top5 = [p.argsort(descending=True)[:5].tolist() for p in probs]

    def _one(self, i: int) -> Classifications:
        return Classifications([self.ims[i]], [self.probs[i]], [self.files[i]], self.names, self.t, (1, *self.s[1:]))

    def _name(self, c: int) -> str:
        return str(self.names.get(c, c))

    def _line(self, i: int) -> str:
        return ", ".join(f"{self._name(j)} {float(self.probs[i][j]):.2f}" for j in self.top5[i])

    def _draw(self, i: int, labels: bool) -> np.ndarray:
        ann = Annotator(self.ims[i][..., ::-1].copy(), line_width=2)
        if labels:
            step = int(28 * ann.fs) + 4  # cv2 writes one line at a time
            for k, j in enumerate(self.top5[i]):
                ann.text((32, 32 + k * step), f"{float(self.probs[i][j]):.2f} {self._name(j)}")
        return np.ascontiguousarray(ann.result()[..., ::-1])

    def records(self, k: int = 5) -> list[list[dict]]:
        """Per image, the k most probable classes: dicts {class, name, confidence}, best first."""
        out = []
        for p in self.probs:
            top = p.argsort(descending=True)[:k].tolist()
            out.append([{"class": j, "name": self._name(j), "confidence": float(p[j])} for j in top])
        return out

    def pandas(self, k: int = 5) -> list:
        """Per image, a pandas DataFrame of the k most probable classes (needs pandas)."""
        pd = _need_pandas("Classifications")
        return [pd.DataFrame(r, columns=["class", "name", "confidence"]) for r in self.records(k)]
