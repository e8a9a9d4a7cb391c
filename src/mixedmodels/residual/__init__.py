"""Residual structures: how the residual covariance departs from sigma^2 I."""
