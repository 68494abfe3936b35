"""Shared utilities: one topic per module (boxes, nms, metrics, loss, ema, checkpoint, plots, data, engine)."""
