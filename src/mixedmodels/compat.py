"""statsmodels-style ``mixedlm`` calls, mapped onto lme4-style models.

Readers of tutorials written for ``statsmodels.formula.api.mixedlm`` can switch in one line::

    import mixedmodels.compat as smf
    md = smf.mixedlm("weight ~ C(treatment) + C(sex) + litsize", data, groups="litter",
                     re_formula="1 + C(sex)")
    fit = md.fit()          # statsmodels' MixedLMResults attributes (compat_results.py)
    fit.params, fit.bse, fit.cov_re, fit.resid, fit.model.exog, ...
    fit.mixedmodels_result  # the mixedmodels fit (lme4 names: fixef, varcorr, ...)

The mapping follows what statsmodels fits (``MixedLM.from_formula``):

* ``re_formula`` (default ``"1"``) gives correlated random effects per group:
  ``re_formula="1 + x"`` (or ``"~x"``, statsmodels' other spelling) is lme4's
  ``(1 + x | groups)``; ``"0 + x"`` is ``(0 + x | groups)``.
* ``groups`` is a column name or, as in statsmodels, an array or Series with one value per
  row (then named ``"Group"`` in the results, as statsmodels names it).
* ``vc_formula={"name": "0 + C(f)"}`` adds a variance component: one effect per level of
  ``f`` within each group, all with one variance: lme4's ``(1 | groups:f)``. A numeric
  ``"0 + x"`` is ``(0 + x | groups)``.
* With ``vc_formula`` and no ``re_formula`` statsmodels fits **no random intercept for the
  group** (its documented behaviour). So the rat-pup tutorial's "uncorrelated random slope"
  model ``vc_formula={"sex": "0 + C(sex)"}`` is really ``(1 | litter:sex)``; we reproduce
  that, and say so (``model.lme4_formula``).
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

import numpy as np
import pandas as pd

from .compat_results import Component, MixedLMResults
from .errors import ModelSpecificationError

__all__ = ["MixedLM", "MixedLMResults", "mixedlm"]

_C_CALL = re.compile(r"^C\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(,.*)?\)$")


def _terms(formula: str) -> list[str]:
    """Split a patsy right-hand side on top-level ``+``."""
    out, depth, cur = [], 0, []
    for ch in formula:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "+" and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [t for t in out if t]


def _variable(term: str) -> tuple[str, bool]:
    """``C(sex)`` -> (``sex``, True); ``litsize`` -> (``litsize``, False)."""
    m = _C_CALL.match(term)
    if m:
        return m.group(1), True
    return term, False


def _re_rhs(re_formula: str) -> str:
    """statsmodels takes ``"1 + x"`` and ``"~x"`` (a one-sided formula) alike."""
    text = re_formula.strip()
    if text.startswith("~"):
        text = text[1:]
    if "~" in text:
        raise ModelSpecificationError(
            f"re_formula {re_formula!r}: give the random-effects columns only, e.g. '~Days' "
            "or '1 + Days' (no response)"
        )
    return text


def _re_term(re_formula: str, groups: str) -> str:
    terms = _terms(_re_rhs(re_formula))
    if not terms:
        raise ModelSpecificationError(f"re_formula {re_formula!r} has no terms")
    return f"({' + '.join(terms)} | {groups})"


def _vc_variable(name: str, vc: str, data: pd.DataFrame | None) -> tuple[str, str, bool]:
    """The one variable of a vc formula: (column, text as written, is a factor)."""
    terms = _terms(_re_rhs(vc).replace("-1", "0"))
    no_intercept = [t for t in terms if t not in ("0", "1")]
    if "0" not in terms or len(no_intercept) != 1:
        raise ModelSpecificationError(
            f"vc_formula[{name!r}] = {vc!r}: only '0 + C(factor)' or '0 + x' (one term, no "
            "intercept) can be mapped onto an lme4 random-effects term; write the model with "
            "mm.lmer instead"
        )
    var, explicit_factor = _variable(no_intercept[0])
    is_factor = explicit_factor
    if not explicit_factor and data is not None and var in data.columns:
        s = data[var]
        is_factor = not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
    return var, no_intercept[0], is_factor


def _vc_term(name: str, vc: str, groups: str, data: pd.DataFrame | None) -> str:
    var, _, is_factor = _vc_variable(name, vc, data)
    if is_factor:
        # One effect per level of `var` within each group, one common variance.
        return f"(1 | {groups}:{var})"
    return f"(0 + {var} | {groups})"


def lme4_formula(
    formula: str,
    groups: str,
    re_formula: str | None = None,
    vc_formula: dict[str, str] | None = None,
    data: pd.DataFrame | None = None,
) -> str:
    """The lme4 formula of a statsmodels ``mixedlm`` specification.

    Examples
    --------
    >>> lme4_formula("weight ~ C(sex) + litsize", "litter", vc_formula={"sex": "0 + C(sex)"})
    'weight ~ C(sex) + litsize + (1 | litter:sex)'
    >>> lme4_formula("weight ~ litsize", "litter", re_formula="1 + C(sex)")
    'weight ~ litsize + (1 + C(sex) | litter)'
    """
    if "|" in formula:
        raise ModelSpecificationError(
            "mixedlm takes a fixed-effects formula (no '|' terms); random effects come from "
            "groups=, re_formula= and vc_formula="
        )
    random: list[str] = []
    if re_formula is not None:
        random.append(_re_term(re_formula, groups))
    elif not vc_formula:
        random.append(f"(1 | {groups})")
    for name, vc in (vc_formula or {}).items():
        random.append(_vc_term(name, vc, groups, data))
    return f"{formula.strip()} + " + " + ".join(random)


class MixedLM:
    """A statsmodels-style model specification; :meth:`fit` returns statsmodels-style results.

    Attributes
    ----------
    lme4_formula
        The lme4 formula this specification is.
    data
        The data (with the groups column added when ``groups`` was an array).
    formula
        The statsmodels (fixed-effects) formula.
    """

    def __init__(
        self,
        lme4_formula: str,
        data: Any,
        *,
        statsmodels_call: str = "",
        formula: str = "",
        group_column: str | None = None,
        group_name: str | None = None,
        components: list[Component] | None = None,
    ):
        self.lme4_formula = lme4_formula
        self.data = data
        self.statsmodels_call = statsmodels_call
        self.formula = formula
        self.group_column = group_column
        self.group_name = group_name or group_column
        self.components = components

    def fit(self, reml: bool = True, **ignored: Any) -> Any:
        """Fit by REML (default, as statsmodels) or ML; optimiser options are ignored.

        Returns
        -------
        MixedLMResults
            statsmodels' attributes (``params``, ``bse``, ``cov_re``, ``resid``, ``model.exog``
            ...); the mixedmodels fit is ``.mixedmodels_result``. A ``MixedLM`` built
            directly from an lme4 formula (no groups) returns the mixedmodels fit itself.
        """
        from .api import lmer

        fit = lmer(self.lme4_formula, self.data, reml=reml)
        if self.components is None or self.group_column is None:
            return fit
        rows = np.asarray(fit.design.row_index)
        groups = self.data[self.group_column].to_numpy()
        index_pos = self.data.index.get_indexer(rows)
        return MixedLMResults(
            fit,
            components=self.components,
            group_name=str(self.group_name),
            group_values=groups[index_pos],
            formula=self.formula,
            lme4_formula=self.lme4_formula,
        )

    def __repr__(self) -> str:
        return f"<MixedLM: lmer({self.lme4_formula!r})>"


def _groups_column(frame: pd.DataFrame, groups: Any) -> tuple[pd.DataFrame, str, str]:
    """The data with a groups column, its name, and the group name statsmodels reports."""
    if isinstance(groups, str):
        if groups not in frame.columns:
            raise ModelSpecificationError(f"groups={groups!r}: no such column in the data")
        return frame, groups, groups
    values = np.asarray(groups)
    if values.ndim != 1 or values.shape[0] != len(frame):
        raise ModelSpecificationError(
            f"groups has {values.size} values but the data have {len(frame)} rows; give one "
            "group per row or the name of a column (groups='litter')"
        )
    name = getattr(groups, "name", None)
    if (
        isinstance(name, str)
        and name in frame.columns
        and np.array_equal(frame[name].to_numpy(), values)
    ):
        return frame, name, "Group"
    column = "Group"
    while column in frame.columns:
        column += "_"
    return frame.assign(**{column: values}), column, "Group"


def mixedlm(
    formula: str,
    data: Any,
    groups: Any,
    re_formula: str | None = None,
    vc_formula: dict[str, str] | None = None,
    *,
    verbose: bool = True,
    file: TextIO | None = None,
) -> MixedLM:
    """A statsmodels ``smf.mixedlm`` call, as an lme4-style model.

    Parameters
    ----------
    formula
        Fixed-effects formula in patsy style (``C(x)``, ``C(x, Treatment('b'))`` work).
    data
        A DataFrame, file path or embedded dataset name.
    groups
        The grouping column's name, or one group per row (array or Series), as statsmodels.
    re_formula
        Random effects per group: ``"1 + x"`` or ``"~x"`` (default: a random intercept,
        unless ``vc_formula`` is given, as statsmodels).
    vc_formula
        Variance components ``{name: "0 + C(f)"}``.
    verbose
        Print the lme4 formula it maps to (default True), so the model is visible.
    file
        Where to print (default stdout).

    Returns
    -------
    MixedLM
        ``.fit()`` returns :class:`~mixedmodels.compat_results.MixedLMResults`.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> md = mm.mixedlm("weight ~ C(treatment) + C(sex) + litsize", "ratpup",
    ...                 groups="litter", vc_formula={"sex": "0 + C(sex)"})
    mixedlm -> lmer: weight ~ C(treatment) + C(sex) + litsize + (1 | litter:sex)
      note: no random intercept for litter (statsmodels' rule with vc_formula and no re_formula)
    """
    from .io import read_data

    frame = read_data(data)
    frame, column, group_name = _groups_column(frame, groups)
    f = lme4_formula(formula, column, re_formula, vc_formula, frame)
    components: list[Component] = []
    if re_formula is not None or not vc_formula:
        components.append(Component("re", group_name, 0))
    for name, vc in (vc_formula or {}).items():
        _, text, is_factor = _vc_variable(name, vc, frame)
        components.append(Component("vc", name, len(components), text, is_factor))
    if verbose:
        print(f"mixedlm -> lmer: {f}", file=file or sys.stdout)
    if vc_formula and re_formula is None and verbose:
        print(
            f"  note: no random intercept for {column} (statsmodels' rule with vc_formula "
            "and no re_formula)",
            file=file or sys.stdout,
        )
    return MixedLM(
        f,
        frame,
        formula=formula,
        group_column=column,
        group_name=group_name,
        components=components,
    )
