"""``analyze``: the whole analysis in one call, returning a report that renders anywhere."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from .analysis import DEFAULT_DATA, Analysis, run_analysis
from .build import build_document
from .document import Document

__all__ = ["FORMATS", "AnalysisReport", "analyze", "format_from_path"]

FORMATS = ("html", "md", "json")
_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}


class AnalysisReport:
    """The result of :func:`analyze`: the computed analysis and its report document.

    Attributes
    ----------
    analysis
        Everything computed, as data: ``analysis.models[k].fit`` is the k-th fit,
        ``analysis.comparisons`` the likelihood-ratio tests, ``analysis.tests`` the residual
        tests.
    document
        The report layout (sections of text, tables and figures).
    """

    def __init__(self, analysis: Analysis, document: Document):
        self.analysis = analysis
        self.document = document

    @property
    def fits(self) -> list[Any]:
        """The fitted models, in the order of the formulas."""
        return [m.fit for m in self.analysis.models]

    @property
    def findings(self) -> list[str]:
        """The findings in plain words."""
        from .findings import findings

        return [text for text, _ in findings(self.analysis)]

    @cached_property
    def _html(self) -> str:
        return self.document.to_html()

    def to_html(self) -> str:
        """One self-contained HTML page (figures inline, no external resources)."""
        return self._html

    def to_markdown(self) -> str:
        """The same content as Markdown (figures as inline data-URI images)."""
        return self.document.to_markdown()

    def to_dict(self) -> dict[str, Any]:
        """The same content as plain data (tables as records; figures by title)."""
        return self.document.to_dict()

    def to_json(self) -> str:
        return json.dumps(_finite(self.to_dict()), indent=1, allow_nan=False) + "\n"

    def render(self, format: str = "html") -> str:
        """The report as text in ``format``: ``html``, ``md`` or ``json``."""
        fmt = _normalise_format(format)
        if fmt == "html":
            return self.to_html()
        if fmt == "md":
            return self.to_markdown()
        return self.to_json()

    def save(
        self,
        path: str | os.PathLike[str],
        format: str | None = None,
        *,
        force: bool = False,
    ) -> Path:
        """Write the report to ``path`` atomically (whole file or nothing).

        Parameters
        ----------
        path
            Output file; its suffix picks the format unless ``format`` is given.
        format
            ``html``, ``md`` or ``json``.
        force
            Replace an existing file.
        """
        from ..io import write_atomic

        fmt = format or format_from_path(path)
        return write_atomic(path, self.render(fmt), force=force)

    def _repr_html_(self) -> str:
        return self.document.to_html(standalone=False)

    def __repr__(self) -> str:
        a = self.analysis
        return (
            f"<AnalysisReport of {a.data_name}: {len(a.models)} models, "
            f"diagnosed {a.diagnosed.label}>"
        )


def _call_text(
    data: Any, formulas: Any, describe_by: Any, diagnose: int, reml: bool, alpha: float
) -> str:
    """``mm.analyze('ratpup')`` as the user would have typed it (a DataFrame as ``data``)."""
    args = [repr(data) if isinstance(data, str | os.PathLike) else "data"]
    if formulas:
        args.append(repr([str(getattr(f, "formula", f)) for f in formulas]))
    for name, value, default in (
        ("describe_by", describe_by, None),
        ("diagnose", diagnose, -1),
        ("reml", reml, True),
        ("alpha", alpha, 0.05),
    ):
        if value != default:
            args.append(f"{name}={value!r}")
    return f"mm.analyze({', '.join(args)})"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _normalise_format(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    f = {"markdown": "md", "htm": "html"}.get(f, f)
    if f not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    return f


def format_from_path(path: str | os.PathLike[str]) -> str:
    """The format a file name asks for (``.html``, ``.md``, ``.json``); html otherwise."""
    return _SUFFIXES.get(Path(path).suffix.lower(), "html")


def analyze(
    data: Any = DEFAULT_DATA,
    formulas: Sequence[str] | None = None,
    *,
    describe_by: Sequence[str] | str | None = None,
    diagnose: int = -1,
    reml: bool = True,
    alpha: float = 0.05,
    progress: bool | Callable[[str], None] | None = None,
    family: str | None = None,
    link: str | None = None,
    nagq: int | None = None,
    nsim: int = 250,
    seed: int | None = 123,
    command: str | None = None,
) -> AnalysisReport:
    """Run the whole analysis: describe the data, fit and compare models, check assumptions.

    Parameters
    ----------
    data
        A DataFrame, a file path or an embedded dataset name. With the default ``"ratpup"``
        and no ``formulas``, the rat-pup analysis of West, Welch & Galecki (2014, ch. 3).
    formulas
        lme4 formulas, in the order of the analysis; each is tested against the next one
        by a likelihood-ratio test when they are nested.
    describe_by
        Factors to summarise the response by (and their combination); a list or a
        comma-separated string.
    diagnose
        Index of the model whose assumptions are checked (default: the last).
    reml
        Fit by REML (default) or ML.
    alpha
        Significance level used in the findings.
    progress
        True to show progress on stderr, or a callable taking a message per step.
    family
        ``"binomial"``, ``"poisson"`` or ``"negative-binomial"``: the models are GLMMs
        (lme4's ``glmer``; a formula without random effects is an ordinary GLM, the null of
        a variance test). The report then shows the response as proportions or counts,
        Wald z tests with odds ratios (logit link) or rate ratios (log link), and the
        simulated (DHARMa) residual checks of :func:`mixedmodels.simulated_residuals`
        instead of the normal-theory ones. ``reml`` does not apply (GLMMs are fitted by
        maximum likelihood); ``describe_by`` defaults to the factors of the diagnosed
        model.
    link
        With ``family``: the link (default logit for binomial, log otherwise).
    nagq
        With ``family``: 1 = Laplace (default), k > 1 = adaptive Gauss-Hermite quadrature,
        0 = lme4's fast mode.
    nsim
        With ``family``: simulations of the residual checks (DHARMa's default 250).
    seed
        With ``family``: seed of those simulations (default 123, as DHARMa), so the same
        data give the same report; None for a fresh one.

    Returns
    -------
    AnalysisReport
        ``to_html()``, ``to_markdown()``, ``to_dict()``, ``save(path)``; renders in Jupyter.

    Raises
    ------
    DataError
        A ``describe_by`` column that is not in the data, or unusable data.
    FormulaError
        A formula that cannot be parsed or does not match the data.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> report = mm.analyze()  # doctest: +SKIP
    >>> report.save("ratpup-report.html")  # doctest: +SKIP
    >>> mm.analyze("cbpp", ["cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"],
    ...            family="binomial")  # doctest: +SKIP
    """
    from .progress import StepProgress

    if family is None:
        for name, value in (("link", link), ("nagq", nagq)):
            if value is not None:
                raise ValueError(
                    f"{name}= applies to generalized linear mixed models only: give family= "
                    "('binomial', 'poisson' or 'negative-binomial')"
                )

    own = None
    if progress is True:
        own = StepProgress()
        callback: Callable[[str], None] | None = own.step
    elif callable(progress):
        callback = progress
    else:
        callback = None
    try:
        analysis: Any
        if family is not None:
            from .glmm_analysis import run_glmm_analysis
            from .glmm_build import build_glmm_document

            analysis = run_glmm_analysis(
                data,
                formulas,
                family=family,
                link=link,
                nagq=nagq,
                describe_by=describe_by,
                diagnose=diagnose,
                alpha=alpha,
                nsim=nsim,
                seed=seed,
                progress=callback,
            )
            document = build_glmm_document(analysis, progress=callback)
        else:
            if command is None:
                command = _call_text(data, formulas, describe_by, diagnose, reml, alpha)
            analysis = run_analysis(
                data,
                formulas,
                describe_by=describe_by,
                diagnose=diagnose,
                reml=reml,
                alpha=alpha,
                progress=callback,
                command=command,
            )
            document = build_document(analysis, progress=callback)
    finally:
        if own is not None:
            own.close()
    return AnalysisReport(analysis, document)
