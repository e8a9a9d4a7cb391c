"""Parse the residual-structure specs of repeated-measures models (never evaluated).

Correlation (nlme's ``correlation=``): ``cs(1 | g)``, ``ar1(t | g)``, ``car1(t | g)``,
``us(t | g)``. Variance function (nlme's ``weights=``): ``power(fitted)``, ``power(x)``,
``exp(x)``, ``ident(x)``. Names are column names of the data (letters, digits, ``_`` and
``.``); anything else is a one-line :class:`~mixedmodels.errors.ModelSpecificationError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mixedmodels.errors import ModelSpecificationError

_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"
_CORRELATION = re.compile(rf"^\s*(\w+)\s*\(\s*({_NAME}|1)\s*\|\s*({_NAME})\s*\)\s*$")
_VARIANCE = re.compile(rf"^\s*(\w+)\s*\(\s*({_NAME})\s*\)\s*$")

CORRELATION_KINDS = {
    "cs": "cs(1 | g) (compound symmetry, nlme's corCompSymm)",
    "ar1": "ar1(t | g) (AR(1) over integer times, nlme's corAR1)",
    "car1": "car1(t | g) (continuous-time AR(1), nlme's corCAR1)",
    "us": "us(t | g) (unstructured: corSymm + varIdent by t, SAS/mmrm UN)",
}
VARIANCE_KINDS = {
    "power": "power(fitted) or power(x) (nlme's varPower)",
    "exp": "exp(x) (nlme's varExp)",
    "ident": "ident(x) (nlme's varIdent)",
}


@dataclass(frozen=True)
class CorrelationSpec:
    """A parsed correlation spec: ``kind(time | group)`` (``time`` None for ``cs``)."""

    kind: str
    time: str | None
    group: str

    def __str__(self) -> str:
        return f"{self.kind}({self.time or 1} | {self.group})"


@dataclass(frozen=True)
class VarianceSpec:
    """A parsed variance-function spec: ``kind(covariate)``; ``covariate`` may be
    ``"fitted"`` for ``power`` and ``exp`` (the fitted values, nlme's default)."""

    kind: str
    covariate: str

    @property
    def on_fitted(self) -> bool:
        return self.covariate == "fitted"

    def __str__(self) -> str:
        return f"{self.kind}({self.covariate})"


def parse_correlation(spec: str | CorrelationSpec | None) -> CorrelationSpec | None:
    """Parse ``"ar1(visit | Subject)"`` and the like (None passes through)."""
    if spec is None or isinstance(spec, CorrelationSpec):
        return spec
    if not isinstance(spec, str):
        raise ModelSpecificationError(
            "correlation must be a string such as 'ar1(visit | Subject)', not "
            f"{type(spec).__name__}"
        )
    m = _CORRELATION.match(spec)
    kinds = "; ".join(CORRELATION_KINDS.values())
    if m is None:
        raise ModelSpecificationError(
            f"cannot read correlation spec {spec!r}: write KIND(TIME | GROUP), one of: {kinds}"
        )
    kind, time, group = m.group(1).lower(), m.group(2), m.group(3)
    if kind not in CORRELATION_KINDS:
        raise ModelSpecificationError(
            f"unknown correlation structure {m.group(1)!r} in {spec!r}; available: {kinds}"
        )
    if kind == "cs":
        if time != "1":
            raise ModelSpecificationError(
                f"compound symmetry has no time: write cs(1 | {group}), not {spec!r}"
            )
        return CorrelationSpec(kind, None, group)
    if time == "1":
        raise ModelSpecificationError(
            f"{kind} needs a time column: write {kind}(TIME | {group}), e.g. "
            f"{kind}(visit | {group})"
        )
    return CorrelationSpec(kind, time, group)


def parse_variance(spec: str | VarianceSpec | None) -> VarianceSpec | None:
    """Parse ``"power(fitted)"``, ``"exp(time)"``, ``"ident(treatment)"`` (None passes)."""
    if spec is None or isinstance(spec, VarianceSpec):
        return spec
    if not isinstance(spec, str):
        raise ModelSpecificationError(
            f"variance must be a string such as 'power(fitted)', not {type(spec).__name__}"
        )
    m = _VARIANCE.match(spec)
    kinds = "; ".join(VARIANCE_KINDS.values())
    if m is None:
        raise ModelSpecificationError(
            f"cannot read variance spec {spec!r}: write KIND(COLUMN), one of: {kinds}"
        )
    kind, covariate = m.group(1).lower(), m.group(2)
    if kind not in VARIANCE_KINDS:
        raise ModelSpecificationError(
            f"unknown variance function {m.group(1)!r} in {spec!r}; available: {kinds}"
        )
    if kind == "ident" and covariate == "fitted":
        raise ModelSpecificationError(
            "ident() needs a grouping column, e.g. ident(treatment); fitted values are not groups"
        )
    return VarianceSpec(kind, covariate)
