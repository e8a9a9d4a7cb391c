"""Cross-product blocks of [Z X y] and the kernels that factor them (the hot path)."""
