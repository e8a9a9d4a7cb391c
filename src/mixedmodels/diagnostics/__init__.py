"""Diagnostics of fitted models: residual checks, variance tests, influence and ICC."""
