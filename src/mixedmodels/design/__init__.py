"""Model frame and numeric design: y, X and random-effects terms from a formula and data.

``build_design(formula, data)`` returns a :class:`ModelDesign`; its ``spec``
(:class:`DesignSpec`) rebuilds the same columns for new data.
"""

from .build import DesignSpec, build_design
from .factors import FactorLevels, format_level
from .model_design import ModelDesign, RandomEffectsTerm

__all__ = [
    "DesignSpec",
    "FactorLevels",
    "ModelDesign",
    "RandomEffectsTerm",
    "build_design",
    "format_level",
]
