"""Models ready to fit: in memory, from streamed chunks, or reduced on a Dask cluster."""
