"""Parse lme4 model formulas into frozen terms, without ever evaluating Python.

Pipeline: text -> tokens (:mod:`.tokens`) -> AST (:mod:`.parser`, :mod:`.nodes`)
-> terms (:mod:`.expand`) -> :class:`ModelFormula`.
"""

from .expand import parse_formula
from .model_formula import FixedPart, ModelFormula, RandomTerm, Term, Variable, term_label
from .parser import ALLOWED_FUNCTIONS, INFIX_OPERATORS, MAX_NESTING_DEPTH, PREFIX_OPERATORS
from .tokens import MAX_FORMULA_LENGTH

__all__ = [
    "ALLOWED_FUNCTIONS",
    "INFIX_OPERATORS",
    "MAX_FORMULA_LENGTH",
    "MAX_NESTING_DEPTH",
    "PREFIX_OPERATORS",
    "FixedPart",
    "ModelFormula",
    "RandomTerm",
    "Term",
    "Variable",
    "parse_formula",
    "term_label",
]
