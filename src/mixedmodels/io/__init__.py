"""Reading data into a DataFrame and writing results to files safely.

``read_data`` accepts a DataFrame, an embedded dataset name or a file path
(CSV/TSV/TXT, Parquet, JSON) and turns every problem with the input into one
clear :class:`~mixedmodels.errors.InputFileError`. ``write_atomic`` writes a
file all at once or not at all.
"""

from __future__ import annotations

from mixedmodels.io.readers import SUPPORTED_EXTENSIONS, read_data
from mixedmodels.io.writers import write_atomic

__all__ = ["SUPPORTED_EXTENSIONS", "read_data", "write_atomic"]
