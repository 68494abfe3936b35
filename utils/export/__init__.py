"""Model export (export.py) and running exported models (utils/export/backend.py).

The format table (formats.py) is the one list of what this toolkit exports; export_weights() and export_model() in
exporter.py are the entries export.py and Python code call.
"""

from __future__ import annotations

from utils.export.formats import FORMATS, HALF_WEIGHTS, ExportError, export_formats  # noqa: F401  (the package's API)
