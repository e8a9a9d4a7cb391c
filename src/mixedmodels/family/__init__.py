"""GLMM families and links: variance, deviance residuals, log-likelihood, start values.

A stage of its own between ``residual/`` and ``objective/``; it imports only
``mixedmodels.errors``, NumPy and SciPy. ``make_family("binomial", "probit")`` or the
constructors ``binomial()``, ``poisson()``, ``negative_binomial(theta)`` give an immutable
:class:`Family`; its :class:`Link` maps means to the linear predictor.

Examples
--------
>>> from mixedmodels.family import make_family
>>> fam = make_family("poisson")
>>> fam.link.inverse([0.0]).tolist(), fam.canonical
([1.0], True)
"""

from .families import (
    FAMILIES,
    Binomial,
    Family,
    NegativeBinomial,
    Poisson,
    binomial,
    make_family,
    negative_binomial,
    poisson,
)
from .links import (
    EPS,
    LINKS,
    CauchitLink,
    CloglogLink,
    IdentityLink,
    InverseLink,
    Link,
    LogitLink,
    LogLink,
    ProbitLink,
    SqrtLink,
    make_link,
)

__all__ = [
    "EPS",
    "FAMILIES",
    "LINKS",
    "Binomial",
    "CauchitLink",
    "CloglogLink",
    "Family",
    "IdentityLink",
    "InverseLink",
    "Link",
    "LogLink",
    "LogitLink",
    "NegativeBinomial",
    "Poisson",
    "ProbitLink",
    "SqrtLink",
    "binomial",
    "make_family",
    "make_link",
    "negative_binomial",
    "poisson",
]
