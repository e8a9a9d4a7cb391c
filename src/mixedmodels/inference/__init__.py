"""Inference for fitted models: Wald, Satterthwaite and Kenward-Roger tests, likelihood-ratio
tests (with chi-bar-square mixtures on the boundary), profile likelihood and parametric
bootstrap."""
