"""The ``mixedmodels`` command: a thin layer over the public Python API.

Subcommands::

    mixedmodels datasets [--json]                       embedded datasets
    mixedmodels fit DATA --formula F [--ml] [--json]    fit a linear mixed model
    mixedmodels fit DATA --formula F --family binomial  fit a GLMM (lme4's glmer)
    mixedmodels compare DATA -f F1 -f F2 [--family ..]  likelihood-ratio tests
    mixedmodels analyze [DATA --formula F ...]          the whole analysis -> HTML report

Every command takes ``--debug`` (show tracebacks), and ``-o OUT`` /
``--force`` to write its output to a file atomically instead of stdout.

Exit status: 0 success, 1 a data, file or model error, 2 a usage error (bad
command line), 3 an internal error (a bug: rerun with ``--debug`` and report
the traceback), 130 interrupted. Errors and warnings are printed on stderr,
one line each: ``mixedmodels: error: ...``, ``mixedmodels: warning: ...``.

This module imports only the standard library and ``mixedmodels.errors`` at
start-up; pandas and the model code are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from mixedmodels.errors import MixedModelsError, MixedModelsWarning

__all__ = ["build_parser", "main"]

PROG = "mixedmodels"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line that cannot be parsed (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _VersionAction(argparse.Action):
    """Print the version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"{PROG} {_version()}", file=sys.stdout)
        parser.exit(EXIT_OK)


def _version() -> str:
    package = sys.modules.get("mixedmodels")
    declared = getattr(package, "__version__", None)
    if declared:
        return str(declared)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PROG)
    except PackageNotFoundError:
        return "unknown (not installed)"


# --------------------------------------------------------------------------- commands
# Each command is a pair: `_add_<name>(subparsers, parents)` declares its
# arguments and sets `run`; `_run_<name>(args) -> str` returns the text to emit
# (stdout or -o). To add a command (e.g. `analyze`), write the pair and list the
# `_add_` function in `_COMMANDS`.


def _add_datasets(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "datasets",
        parents=parents,
        help="list the embedded datasets",
        description="List the datasets shipped with mixedmodels; use a name as DATA in 'fit'.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.set_defaults(run=_run_datasets)


def _run_datasets(args: argparse.Namespace) -> str:
    from mixedmodels.datasets import list_datasets

    table = list_datasets()
    if args.json:
        return _to_json(table.to_dict(orient="records"))
    # Two lines per dataset (description, then source) keep the table narrow.
    headers = ["name", "rows", "cols", "description / source"]
    records = table.to_dict(orient="records")
    name_width = max(len(headers[0]), *(len(str(r["name"])) for r in records))
    indent = " " * (name_width + 14)
    lines = [f"{headers[0]:<{name_width}}  {headers[1]:>4}  {headers[2]:>4}  {headers[3]}"]
    for r in records:
        lines.append(
            f"{r['name']:<{name_width}}  {r['rows']:>4}  {r['columns']:>4}  {r['description']}"
        )
        lines.append(f"{indent}{r['source']}")
    return "\n".join(lines) + "\n"


def _add_fit(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fit",
        parents=parents,
        help="fit a linear or generalized linear mixed model",
        description=(
            "Fit a linear mixed model (lme4 formula syntax) by REML, or ML with --ml, or with "
            "--family a generalized linear mixed model (lme4's glmer: Laplace approximation, "
            "or adaptive Gauss-Hermite quadrature with --nagq), and print an lme4-style "
            "summary, or the JSON described in the README with --json."
        ),
    )
    parser.add_argument(
        "data",
        metavar="DATA",
        help="data file (.csv, .tsv, .txt, .parquet, .pq, .json) or embedded dataset name",
    )
    parser.add_argument(
        "-f",
        "--formula",
        required=True,
        help="model formula, e.g. 'weight ~ treatment + sex + litsize + (1|litter)'",
    )
    parser.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--anova", action="store_true", help="add Type III F tests of each model term"
    )
    parser.add_argument(
        "--ddf",
        choices=("satterthwaite", "kenward-roger"),
        default=None,
        help="denominator degrees of freedom of t and F tests (default: satterthwaite)",
    )
    parser.add_argument(
        "--weights",
        metavar="COLUMN",
        help="prior weights from COLUMN: row i has residual variance sigma^2 / w_i "
        "(lme4's weights=; with --family, glmer's prior weights); offsets go in the "
        "formula: offset(COLUMN)",
    )
    _add_family_options(parser)
    parser.add_argument(
        "--residual-groups",
        metavar="COLUMN",
        help="a residual variance per group of COLUMN (nlme's varIdent), e.g. treatment",
    )
    parser.add_argument(
        "--residual-pool",
        metavar="NAME=L1,L2",
        action="append",
        default=[],
        help="with --residual-groups: pool levels into one group, e.g. HighLow=High,Low "
        "(repeatable)",
    )
    parser.add_argument(
        "--correlation",
        metavar="SPEC",
        default=None,
        help="residual correlation within groups (nlme's correlation=): 'cs(1 | g)', "
        "'ar1(t | g)', 'car1(t | g)' or 'us(t | g)'; the formula may then have no "
        "random-effects term (nlme's gls)",
    )
    parser.add_argument(
        "--variance",
        metavar="SPEC",
        default=None,
        help="residual variance function (nlme's weights=): 'power(fitted)', 'power(x)', "
        "'exp(x)' or 'ident(x)' (= --residual-groups x)",
    )
    parser.add_argument(
        "--chunk-rows",
        metavar="N",
        type=int,
        default=None,
        help="stream DATA (Parquet file, folder or quoted glob 'events/*.parquet') in chunks "
        "of N rows: two passes, bounded memory (a folder or glob streams by default)",
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        default=None,
        help="compute on the Dask cluster at ADDRESS (e.g. tcp://host:8786); DATA is read "
        "with dask.dataframe.read_parquet",
    )
    parser.set_defaults(run=_run_fit)


def _residual_pooling(items: list[str]) -> dict[str, list[str]] | None:
    """Parse repeated ``NAME=L1,L2`` options into ``{NAME: [L1, L2]}``."""
    if not items:
        return None
    from mixedmodels.errors import DataError

    pooling: dict[str, list[str]] = {}
    for item in items:
        name, sep, levels = item.partition("=")
        if not sep or not name.strip() or not levels.strip():
            raise DataError(
                f"--residual-pool {item!r} is not NAME=LEVEL,LEVEL (e.g. HighLow=High,Low)"
            )
        pooling[name.strip()] = [lv.strip() for lv in levels.split(",") if lv.strip()]
    return pooling


def _fit_output(fit: Any, args: argparse.Namespace) -> str:
    """The summary (or JSON) of a fit, with the ANOVA table when asked."""
    ddf = getattr(args, "ddf", None) or "satterthwaite"
    want_anova = getattr(args, "anova", False)
    if args.json:
        out = fit.to_dict()
        if ddf != "satterthwaite":
            out["fixef"] = _coef_records(fit.coef_table(ddf=ddf))
        if want_anova:
            table = fit.anova(ddf=ddf)
            out["anova"] = [{"term": str(term), **row} for term, row in table.iterrows()]
        return _to_json(out)
    text = str(fit.summary()).rstrip("\n") + "\n"
    if ddf != "satterthwaite":
        text += f"\nFixed effects ({ddf} df):\n{fit.coef_table(ddf=ddf).to_string()}\n"
    if want_anova:
        text += f"\nType III Analysis of Variance Table ({ddf} df):\n"
        text += fit.anova(ddf=ddf).to_string() + "\n"
    return text


def _coef_records(table: Any) -> list[dict[str, Any]]:
    return [
        {"term": str(name), "estimate": r.estimate, "se": r.se, "df": r.df, "t": r.t, "p": r.p}
        for name, r in table.iterrows()
    ]


def _run_fit(args: argparse.Namespace) -> str:
    import mixedmodels
    from mixedmodels.io import read_data

    if _check_family_options(args, "fit"):
        return _fit_output(_fit_glmm_streamed_or_in_memory(args), args)
    streamed = _fit_streamed(args)
    if streamed is not None:
        return _fit_output(streamed, args)
    data = read_data(args.data)
    pooling = _residual_pooling(args.residual_pool)
    if pooling is not None and not args.residual_groups:
        from mixedmodels.errors import DataError

        raise DataError("--residual-pool needs --residual-groups COLUMN")
    fit = mixedmodels.lmer(
        args.formula,
        data,
        reml=not args.ml,
        weights=args.weights,
        residual_groups=args.residual_groups,
        residual_pooling=pooling,
        correlation=args.correlation,
        variance=args.variance,
    )
    return _fit_output(fit, args)


def _fit_streamed(args: argparse.Namespace) -> Any:
    """Fit in chunks or on a Dask cluster when asked (or for a folder/glob); else None."""
    from mixedmodels.io.sources import is_streamed_source

    if args.chunk_rows is None and args.dask is None and not is_streamed_source(args.data):
        return None
    if args.residual_groups or args.residual_pool or args.correlation or args.variance:
        from mixedmodels.errors import ModelSpecificationError

        raise ModelSpecificationError(
            "--residual-groups, --correlation and --variance are not available for streamed "
            "or Dask fits; drop --chunk-rows/--dask or the residual structure"
        )
    if args.dask is not None:
        from mixedmodels.models.dask_fit import lmer_dask

        Client, dd = _dask_modules()
        with Client(args.dask):
            return lmer_dask(
                args.formula, dd.read_parquet(args.data), reml=not args.ml, weights=args.weights
            )
    from mixedmodels.models.streamed import lmer_streamed

    return lmer_streamed(
        args.formula,
        args.data,
        reml=not args.ml,
        chunk_rows=args.chunk_rows,
        weights=args.weights,
    )


FAMILIES = ("binomial", "poisson", "negative-binomial")

# Options of linear mixed models that have no meaning for a GLMM, with the reason.
_LMM_ONLY_OPTIONS = (
    ("ml", "--ml", "GLMMs are always fitted by maximum likelihood (Laplace or quadrature)"),
    ("ddf", "--ddf", "GLMM fixed effects have Wald z tests (no denominator df)"),
    ("anova", "--anova", "F tests need a residual variance; compare nested fits instead"),
    ("residual_groups", "--residual-groups", "GLMMs have no residual variance"),
    ("residual_pool", "--residual-pool", "GLMMs have no residual variance"),
    ("correlation", "--correlation", "GLMMs have no residual correlation here"),
    ("variance", "--variance", "GLMMs have no residual variance"),
)


def _add_family_options(parser: argparse.ArgumentParser) -> None:
    """``--family``, ``--link`` and ``--nagq``: fit GLMMs (lme4's glmer) instead of LMMs."""
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        help="fit a generalized linear mixed model (lme4's glmer) with this response "
        "distribution; a binomial response is 0/1, a proportion with --weights, or "
        "cbind(successes, failures)",
    )
    parser.add_argument(
        "--link",
        metavar="LINK",
        help="with --family: the link function (default: logit for binomial, log otherwise)",
    )
    parser.add_argument(
        "--nagq",
        metavar="N",
        type=int,
        default=None,
        help="with --family: 1 = Laplace approximation (default), N > 1 = adaptive "
        "Gauss-Hermite quadrature with N nodes (one scalar random intercept), 0 = lme4's "
        "fast mode",
    )


def _check_family_options(args: argparse.Namespace, command: str) -> bool:
    """Whether this is a GLMM command line; refuse options that do not fit it (usage errors)."""
    if args.family is None:
        for name in ("link", "nagq"):
            if getattr(args, name) is not None:
                raise UsageError(
                    f"--{name} applies to generalized linear mixed models only: add "
                    f"--family ({', '.join(FAMILIES)}) (see '{PROG} {command} --help')"
                )
        return False
    for dest, option, why in _LMM_ONLY_OPTIONS:
        if getattr(args, dest, None):
            raise UsageError(
                f"{option} does not apply with --family: {why}; drop {option} "
                f"(see '{PROG} {command} --help')"
            )
    if args.nagq is not None and args.nagq < 0:
        raise UsageError(
            f"--nagq must be 0, 1 or a number of quadrature nodes, not {args.nagq} "
            f"(see '{PROG} {command} --help')"
        )
    return True


def _fit_glmm(
    args: argparse.Namespace, formula: str, data: Any, chunk_rows: int | None = None
) -> Any:
    """``mixedmodels.api.glmer`` with the command line's family options."""
    from mixedmodels.api import glmer

    return glmer(
        formula,
        data,
        family=args.family,
        link=args.link,
        nagq=1 if args.nagq is None else args.nagq,
        weights=getattr(args, "weights", None),
        **({} if chunk_rows is None else {"chunk_rows": chunk_rows}),
    )


def _dask_modules() -> tuple[Any, Any]:
    """``distributed.Client`` and ``dask.dataframe`` for ``--dask``, or a one-line error."""
    try:
        import dask.dataframe as dd
        from distributed import Client
    except ImportError:
        from mixedmodels.errors import InputFileError

        raise InputFileError(
            "--dask needs dask and distributed: python3 -m pip install 'mixedmodels[dask]'"
        ) from None
    return Client, dd


def _fit_glmm_streamed_or_in_memory(args: argparse.Namespace) -> Any:
    """``fit --family``: in chunks (``--chunk-rows``, a folder or glob), on a Dask cluster
    (``--dask``), or in memory."""
    from mixedmodels.io import read_data
    from mixedmodels.io.sources import is_streamed_source

    if args.dask is not None:
        Client, dd = _dask_modules()
        with Client(args.dask):
            return _fit_glmm(args, args.formula, dd.read_parquet(args.data))
    if args.chunk_rows is not None or is_streamed_source(args.data):
        return _fit_glmm(args, args.formula, args.data, chunk_rows=args.chunk_rows)
    return _fit_glmm(args, args.formula, read_data(args.data))


def _fit_glm(args: argparse.Namespace, formula: str, data: Any) -> Any:
    """A GLM without random effects (the null of a variance test), where the API has one."""
    import mixedmodels.api
    from mixedmodels.errors import ModelSpecificationError

    glm = getattr(mixedmodels.api, "glm", None)
    if glm is None:
        raise ModelSpecificationError(
            f"{formula!r} has no (...|group) term, and fitting a generalized linear model "
            "without random effects is not available yet; give every --formula a random-"
            "effects term"
        )
    return glm(formula, data, family=args.family, link=args.link)


def _add_compare(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compare",
        parents=parents,
        help="likelihood-ratio tests of nested models",
        description=(
            "Fit two or more nested models and compare them by likelihood-ratio tests, as "
            "lme4's anova(): models whose fixed effects differ are refitted by ML; a variance "
            "tested on the boundary gets the chi-bar-square mixture p beside the naive p. A "
            "formula without a (...|group) term is fitted as an ordinary linear model. With "
            "--family the models are GLMMs (lme4's glmer) compared by their Laplace (or "
            "quadrature) log-likelihoods."
        ),
    )
    parser.add_argument("data", metavar="DATA", help="data file or embedded dataset name")
    parser.add_argument(
        "-f", "--formula", action="append", required=True, help="a model (give two or more)"
    )
    parser.add_argument("--ml", action="store_true", help="fit by ML instead of REML")
    parser.add_argument(
        "--correlation",
        metavar="SPEC",
        action="append",
        default=None,
        help="residual correlation of each model, one per --formula in the same order "
        "('none' for none), e.g. --correlation 'cs(1 | Subject)' --correlation "
        "'us(visit | Subject)'",
    )
    parser.add_argument(
        "--variance",
        metavar="SPEC",
        action="append",
        default=None,
        help="residual variance function of each model, one per --formula ('none' for none)",
    )
    parser.add_argument(
        "--boundary",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force (or, with --no-boundary, refuse) the chi-bar-square boundary p-value; "
        "by default it is used where a variance is tested at 0",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    _add_family_options(parser)
    parser.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> str:
    import mixedmodels
    from mixedmodels.errors import DataError
    from mixedmodels.io import read_data

    glmm = _check_family_options(args, "compare")
    if len(args.formula) < 2:
        raise DataError("compare needs at least two --formula options")
    data = read_data(args.data)
    structures = _per_model_structures(args)
    fits = []
    for formula, (correlation, variance) in zip(args.formula, structures, strict=True):
        parsed = mixedmodels.parse_formula(formula)
        if correlation is not None or variance is not None:
            if glmm:
                raise DataError("--correlation and --variance do not apply with --family")
            fits.append(
                mixedmodels.lmer(
                    formula, data, reml=not args.ml, correlation=correlation, variance=variance
                )
            )
        elif glmm:
            fit = _fit_glmm if parsed.random else _fit_glm
            fits.append(fit(args, formula, data))
        elif parsed.random:
            fits.append(mixedmodels.lmer(formula, data, reml=not args.ml))
        else:
            fits.append(mixedmodels.lm(formula, data, reml=not args.ml))
    result = mixedmodels.compare(*fits, boundary=args.boundary)
    if args.json:
        return _to_json(result.to_dict())
    return str(result).rstrip("\n") + "\n"


def _add_power(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "power",
        parents=parents,
        help="power of a test by simulation (simr's powerSim / powerCurve)",
        description=(
            "Fit the model to DATA (the pilot), simulate new responses from it (with the "
            "coefficient of --test set to --effect, and the design extended to --groups "
            "levels of --along), refit and test each, and report the share of significant "
            "tests with its Clopper-Pearson interval. Several --groups give a power curve. "
            "The default test of a coefficient is a Wald t with Kenward-Roger df (simr's "
            "default; Satterthwaite with --ml)."
        ),
    )
    parser.add_argument("data", metavar="DATA", help="data file or embedded dataset name")
    parser.add_argument("-f", "--formula", required=True, help="the model (lme4 syntax)")
    parser.add_argument(
        "--test",
        default=None,
        help="a coefficient (treatmentHigh), a term (treatment) or a hypothesis "
        "('treatmentHigh = treatmentLow'); default: the first coefficient after the intercept",
    )
    parser.add_argument(
        "--effect", type=float, default=None, help="the tested coefficient's value to simulate"
    )
    parser.add_argument("--null", default=None, help="a smaller model: test by LRT against it")
    parser.add_argument(
        "--groups",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="numbers of levels of --along (several: a power curve)",
    )
    parser.add_argument(
        "--along", default=None, help="the grouping column --groups counts (default: the first)"
    )
    parser.add_argument("--sigma", type=float, default=None, help="residual SD to simulate")
    parser.add_argument("--nsim", type=int, default=1000, help="simulations (default 1000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--method",
        default=None,
        choices=["kenward-roger", "kr", "satterthwaite", "z", "lrt"],
        help="test of a coefficient or term",
    )
    parser.add_argument("--ml", action="store_true", help="fit by ML instead of REML")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=_run_power)


def _run_power(args: argparse.Namespace) -> str:
    import mixedmodels
    from mixedmodels.errors import ModelSpecificationError
    from mixedmodels.io import read_data

    data = read_data(args.data)
    fit = mixedmodels.lmer(args.formula, data, reml=not args.ml)
    fixef = None
    if args.effect is not None:
        if args.test is None or args.test not in fit.fixef.index:
            raise ModelSpecificationError(
                "--effect sets a coefficient: give it with --test (one of "
                f"{', '.join(fit.fixef.index)})"
            )
        fixef = {args.test: args.effect}
    options = dict(
        nsim=args.nsim,
        alpha=args.alpha,
        seed=args.seed,
        method=args.method,
        null=args.null,
        fixef=fixef,
        sigma=args.sigma,
        data=data,
        n_jobs=args.jobs,
    )
    along = args.along or fit.structure.terms[0].group
    if args.groups and len(args.groups) > 1:
        result: Any = mixedmodels.power_curve(
            fit, args.test, along=along, sizes=args.groups, **options
        )
    else:
        groups = {along: args.groups[0]} if args.groups else None
        result = mixedmodels.power(fit, args.test, groups=groups, **options)
    if args.json:
        return _to_json(result.to_dict())
    return str(result).rstrip("\n") + "\n"


def _per_model_structures(args: argparse.Namespace) -> list[tuple[str | None, str | None]]:
    """``(correlation, variance)`` of each ``--formula`` of ``compare`` ('none': None)."""
    from mixedmodels.errors import DataError

    n = len(args.formula)
    columns = []
    for option, values in (("--correlation", args.correlation), ("--variance", args.variance)):
        if values is None:
            columns.append([None] * n)
            continue
        if len(values) != n:
            raise DataError(
                f"give {option} once per --formula ({n}), in the same order, with 'none' for a "
                f"model without it; got {len(values)}"
            )
        columns.append([None if v.strip().lower() == "none" else v for v in values])
    return list(zip(*columns, strict=True))


def _add_analyze(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "analyze",
        parents=parents,
        help="the whole analysis: data, models, tests, diagnostics -> HTML report",
        description=(
            "Describe the data, fit a sequence of models, compare neighbours by likelihood-"
            "ratio tests, check the assumptions of the last model (of M2 for ratpup, as the "
            "tutorial does), and write a self-contained "
            "report (HTML, Markdown or JSON) plus a short summary on stdout. Without "
            "arguments: the rat-pup analysis (West, Welch & Galecki 2014, ch. 3) written to "
            "ratpup-report.html. With --family the models are GLMMs (lme4's glmer; a formula "
            "without random effects is a GLM): the report shows proportions or counts, odds "
            "or rate ratios, and simulated (DHARMa) residual checks of dispersion, zero "
            "inflation and uniformity instead of the normal-theory ones. The default output "
            "name is replaced if it exists; -o OUT needs --force to replace OUT."
        ),
    )
    parser.add_argument(
        "data",
        metavar="DATA",
        nargs="?",
        default="ratpup",
        help="data file or embedded dataset name (default: ratpup)",
    )
    parser.add_argument(
        "-f",
        "--formula",
        action="append",
        default=[],
        help="a model formula; repeat for a sequence of models (default for ratpup: the "
        "tutorial's four models, then West et al.'s Models 3.2A, 3.2B and 3.3)",
    )
    parser.add_argument(
        "--describe-by",
        metavar="COLS",
        help="comma-separated factors to summarise the response by, e.g. treatment,sex",
    )
    parser.add_argument(
        "--format",
        choices=("html", "md", "json"),
        help="report format (default: from the suffix of -o, else html)",
    )
    parser.add_argument(
        "--diagnose",
        type=int,
        metavar="K",
        help="check the assumptions of model K (1-based; default: the last, M2 for the "
        "default ratpup run)",
    )
    parser.add_argument("--ml", action="store_true", help="fit by maximum likelihood")
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    _add_family_options(parser)
    parser.set_defaults(run=_run_analyze)


def _check_writable(path: str, force: bool) -> None:
    """Fail before the (long) analysis when the report could not be written."""
    from pathlib import Path

    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise IsADirectoryError(21, "Is a directory (give a file name)", str(target))
    if not parent.is_dir():
        raise FileNotFoundError(2, "No such directory for the report", str(parent))
    if not os.access(parent, os.W_OK):
        raise PermissionError(13, "Cannot write the report in this directory", str(parent))
    if target.exists() and not force:
        raise FileExistsError(17, "File exists (use --force to replace it)", str(target))


def _analyze_command(args: argparse.Namespace) -> str:
    """The command line of this run (for the report's provenance), shell-quoted."""
    import shlex

    words = ["mixedmodels", "analyze", args.data]
    for f in args.formula:
        words += ["-f", f]
    for flag, value in (
        ("--describe-by", args.describe_by),
        ("--diagnose", args.diagnose),
        ("--family", args.family),
        ("--link", args.link),
        ("--nagq", args.nagq),
        ("--format", args.format),
        ("-o", args.output),
    ):
        if value is not None:
            words += [flag, str(value)]
    if args.ml:
        words.append("--ml")
    return shlex.join(words)


def _run_analyze(args: argparse.Namespace) -> str:
    from mixedmodels.report import analyze, format_from_path
    from mixedmodels.report.progress import StepProgress
    from mixedmodels.report.terminal import print_summary, terminal_summary

    glmm = _check_family_options(args, "analyze")
    if glmm and not args.formula:
        from mixedmodels.errors import ModelSpecificationError

        raise ModelSpecificationError(
            "analyze --family needs the models: give one or more --formula, e.g. -f "
            "'cbind(successes, failures) ~ x + (1 | g)'"
        )
    if args.format:
        fmt = args.format
    elif args.output and args.output != "-":
        fmt = format_from_path(args.output)
    else:
        fmt = "html"
    if args.output and args.output != "-":
        path, force = args.output, bool(args.force)
    else:
        stem = os.path.splitext(os.path.basename(args.data))[0] or "analysis"
        path, force = f"{stem.lower()}-report.{fmt}", True
    _check_writable(path, force)
    describe_by = args.describe_by.split(",") if args.describe_by else None
    diagnose = -1 if args.diagnose is None else args.diagnose - 1
    if args.diagnose is not None and args.diagnose < 1:
        raise ValueError("--diagnose counts models from 1")
    progress = None if args.quiet else StepProgress()
    try:
        report = analyze(
            args.data,
            args.formula or None,
            describe_by=describe_by,
            diagnose=diagnose,
            reml=not args.ml,
            progress=progress.step if progress else None,
            family=args.family,
            link=args.link,
            nagq=args.nagq,
            command=_analyze_command(args),
        )
        if progress:
            progress.step(f"writing {path}")
        report.save(path, fmt, force=force)
    finally:
        if progress:
            progress.close()
    # The report is this command's file output; stdout gets the summary, so the generic
    # writer must not send the summary to -o as well.
    args.output = None
    if sys.stdout.isatty() and print_summary(report, path=path):
        return ""
    return terminal_summary(report, path=path)


_COMMANDS: tuple[Callable[[Any, list[argparse.ArgumentParser]], None], ...] = (
    _add_datasets,
    _add_fit,
    _add_compare,
    _add_analyze,
    _add_power,
)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``mixedmodels`` command."""
    parser = _Parser(
        prog=PROG,
        description="Linear mixed-effects models with lme4 formulas.",
        epilog="Run 'mixedmodels COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument(
        "--debug", action="store_true", default=False, help="show a traceback on errors"
    )

    # Shared options. SUPPRESS keeps a subcommand from resetting a --debug given
    # before the command name.
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show a traceback on errors",
    )
    common.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="write the output to OUT (atomically) instead of stdout",
    )
    common.add_argument("--force", action="store_true", help="with -o: overwrite OUT if it exists")

    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(subparsers, [common])
    return parser


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "run", None) is None:
            parser.error(f"choose a command: {', '.join(_command_names(parser))}")
    except UsageError as exc:
        _print_error(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK

    debug = bool(getattr(args, "debug", False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", MixedModelsWarning)
            warnings.showwarning = _warning_printer(debug)
            text = args.run(args)
        _emit(text, args)
    except UsageError as exc:  # options that parse but do not go together
        _print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as cat does.
        _silence_stdout()
        return EXIT_ERROR
    except (MixedModelsError, OSError, ValueError) as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        _print_error(_describe(exc))
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        _print_error(
            f"internal error: {type(exc).__name__}: {_describe(exc)} "
            "(this is a bug: rerun with --debug and report the traceback)"
        )
        return EXIT_INTERNAL
    return EXIT_OK


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _emit(text: str, args: argparse.Namespace) -> None:
    output = getattr(args, "output", None)
    if output and output != "-":
        from mixedmodels.io import write_atomic

        _refuse_to_overwrite_input(output, getattr(args, "data", None))
        write_atomic(output, text, force=bool(getattr(args, "force", False)))
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def _refuse_to_overwrite_input(output: str, data: Any) -> None:
    """Never replace the input data with the output, not even with --force."""
    if not isinstance(data, str) or not os.path.isfile(data) or not os.path.exists(output):
        return
    if os.path.samefile(data, output):
        raise MixedModelsError(
            f"refusing to write the output to '{output}': it is the input data file; "
            "choose another output path"
        )


def _to_json(value: Any) -> str:
    """Serialise to strict JSON on one line: NaN and infinities become null."""
    return json.dumps(_jsonable(value), allow_nan=False) + "\n"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    if type(value).__name__ in {"NAType", "NaTType"}:  # pandas missing values
        return None
    raise TypeError(f"cannot write a {type(value).__name__} value as JSON")


def _warning_printer(debug: bool) -> Callable[..., None]:
    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        text = _one_line(str(message))
        if not issubclass(category, MixedModelsWarning):
            text = f"{category.__name__}: {text}"
        if debug:
            text = f"{text} ({filename}:{lineno})"
        print(f"{PROG}: warning: {text}", file=sys.stderr)

    return show


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: '{exc.filename}'"
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _print_error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
