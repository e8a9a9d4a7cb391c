"""The criteria a fit minimises: the profiled REML/ML deviance, its gradient, start values."""
