"""Map per-pixel logits of a letterboxed input back onto the original image, exactly for any aspect ratio.

The letterbox (utils/data/imageio.letterbox) resizes the image to (nh, nw) = round(h0 * r), round(w0 * r) and pads
`top = round(dh - 0.1)` rows above and `left = round(dw - 0.1)` columns to the left. Inverting it means cutting that
content window out of the logits and resizing the window to (h0, w0), both with half-pixel centres
(align_corners=False, the convention of the forward cv2.resize), then taking the argmax. Resizing the padded map
instead (the reference's way) is right only when there is no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def content_window(input_hw: tuple[int, int], shape0: tuple[int, int],
                   ratio_pad=None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside a letterboxed input of size input_hw.

    ratio_pad is the letterbox's ((rh, rw), (dw, dh)) as the datasets store it; without it the letterbox that fits
    shape0 into input_hw is assumed (right for predictor inputs, whose long side fills the input).
    """
    H, W = int(input_hw[0]), int(input_hw[1])
    if ratio_pad is not None:
        dw, dh = float(ratio_pad[1][0]), float(ratio_pad[1][1])
        top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
        left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
        return top, left, H - top - bottom, W - left - right
    h0, w0 = int(shape0[0]), int(shape0[1])
    r = min(H / h0, W / w0)
    nh, nw = min(H, int(round(h0 * r))), min(W, int(round(w0 * r)))
    top, left = int(round((H - nh) / 2 - 0.1)), int(round((W - nw) / 2 - 0.1))
    return top, left, nh, nw


def _resample(x: torch.Tensor, y0: float, x0: float, hh: float, ww: float, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resample of the window (y0, x0, hh, ww) of x (B, C, h, w), in pixels, to `size`, half-pixel centres.

    Used when the window does not fall on whole logit pixels (logits coarser than the input); sampling is clamped to
    the window so padding never bleeds into the image's border pixels.
    """
    h, w = x.shape[-2:]
    H0, W0 = size
    dev, dt = x.device, torch.float32

    def coords(start: float, extent: float, n_out: int, n_in: int) -> torch.Tensor:
        c = start + (torch.arange(n_out, device=dev, dtype=dt) + 0.5) * (extent / n_out) - 0.5
        c = c.clamp(start, start + extent - 1) if extent >= 1 else torch.full_like(c, start)
        return c.clamp(0, n_in - 1) * (2 / max(n_in - 1, 1)) - 1  # grid_sample's align_corners=True units

    gy, gx = coords(y0, hh, H0, h), coords(x0, ww, W0, w)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)  # (H0, W0, 2) as (x, y)
    grid = grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def unletterbox_logits(logits: torch.Tensor, input_hw: tuple[int, int], shape0: tuple[int, int],
                       ratio_pad=None) -> torch.Tensor:
    """Logits (C, h, w) or (B, C, h, w) of letterboxed input(s) of size input_hw -> (..., C, h0, w0) on the original.

    The logits may be coarser than the input (h = input h / stride); all images of a batch share shape0.
    """
    squeeze = logits.dim() == 3
    x = logits.unsqueeze(0) if squeeze else logits
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # CPU bilinear kernels lack half precision
    h0, w0 = int(shape0[0]), int(shape0[1])
    top, left, nh, nw = content_window(input_hw, shape0, ratio_pad)
    sy, sx = x.shape[-2] / input_hw[0], x.shape[-1] / input_hw[1]
    y0, x0, hh, ww = top * sy, left * sx, nh * sy, nw * sx
    exact = all(abs(v - round(v)) < 1e-6 for v in (y0, x0, hh, ww))
    if exact:
        y0, x0, hh, ww = (int(round(v)) for v in (y0, x0, hh, ww))
        win = x[..., y0:y0 + hh, x0:x0 + ww]
        out = win if (hh, ww) == (h0, w0) else F.interpolate(win, size=(h0, w0), mode="bilinear",
                                                               align_corners=False)
    else:
        out = _resample(x, y0, x0, hh, ww, (h0, w0))
    return out[0] if squeeze else out


def logits_to_label_map(logits: torch.Tensor, input_hw: tuple[int, int], shape0: tuple[int, int],
                        ratio_pad=None) -> torch.Tensor:
    """One image's logits (C, h, w) -> (h0, w0) int64 class ids at the original resolution."""
    return unletterbox_logits(logits, input_hw, shape0, ratio_pad).argmax(0)


def label_maps(logits: torch.Tensor, input_hw: tuple[int, int], shapes) -> list[torch.Tensor]:
    """A batch's logits (B, C, h, w) and its `shapes` ((h0, w0), ratio_pad) per image -> list of (h0, w0) id maps.

    One image at a time, so only one full-resolution logit map is alive at once.
    """
    return [logits_to_label_map(logits[i], input_hw, s[0], s[1] if len(s) > 1 else None) for i, s in enumerate(shapes)]

