"""The benchmark models: one lme4 formula each, plus how statsmodels can express it.

Every contestant fits the same pandas DataFrame. ``factors`` lists the columns that are
turned into strings before anyone sees the data, so that every library treats them as
categorical with the same (sorted) levels; the REML criterion is then comparable across
libraries because the fixed-effects design spans the same space with the same basis up
to a permutation of columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import synthetic

REPO = Path(__file__).resolve().parent.parent
# InstEval is not embedded in the package; it is read from the project's shared data
# folder when that folder sits next to the repository (as in the development setup).
INSTEVAL_CSV = REPO.parent / "shared" / "data" / "InstEval.csv"


@dataclass(frozen=True)
class StatsmodelsSpec:
    """How ``statsmodels.formula.api.mixedlm`` expresses a model.

    ``groups`` names the columns whose pasted values form statsmodels' single grouping
    factor; an empty tuple means one group holding every row, the trick for crossed
    random effects (each crossed factor then becomes a variance component).
    """

    formula: str
    groups: tuple[str, ...]
    re_formula: str | None = None
    vc_formula: dict[str, str] | None = None
    use_sparse: bool = False


@dataclass(frozen=True)
class Model:
    key: str
    dataset: str
    formula: str
    large: bool = False
    factors: tuple[str, ...] = ()
    statsmodels: StatsmodelsSpec | None = None
    statsmodels_skip: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: Key of a design simulated by ``synthetic.py`` (the dataset is then "synthetic").
    synthetic: str | None = None


ONE_GROUP: tuple[str, ...] = ()

MODELS: tuple[Model, ...] = (
    Model(
        key="dyestuff",
        dataset="dyestuff",
        formula="Yield ~ 1 + (1|Batch)",
        statsmodels=StatsmodelsSpec("Yield ~ 1", groups=("Batch",)),
    ),
    Model(
        key="sleepstudy_int",
        dataset="sleepstudy",
        formula="Reaction ~ Days + (1|Subject)",
        statsmodels=StatsmodelsSpec("Reaction ~ Days", groups=("Subject",)),
    ),
    Model(
        key="sleepstudy_corr",
        dataset="sleepstudy",
        formula="Reaction ~ Days + (Days|Subject)",
        statsmodels=StatsmodelsSpec("Reaction ~ Days", groups=("Subject",), re_formula="~Days"),
    ),
    Model(
        key="penicillin",
        dataset="penicillin",
        formula="diameter ~ 1 + (1|plate) + (1|sample)",
        statsmodels=StatsmodelsSpec(
            "diameter ~ 1",
            groups=ONE_GROUP,
            re_formula="0",
            vc_formula={"plate": "0 + C(plate)", "sample": "0 + C(sample)"},
        ),
    ),
    Model(
        key="pastes",
        dataset="pastes",
        formula="strength ~ 1 + (1|batch/cask)",
        statsmodels=StatsmodelsSpec(
            "strength ~ 1", groups=("batch",), vc_formula={"cask": "0 + C(cask)"}
        ),
    ),
    Model(
        key="ratpup_b",
        dataset="ratpup",
        formula="weight ~ treatment + sex + litsize + (1|litter)",
        statsmodels=StatsmodelsSpec("weight ~ treatment + sex + litsize", groups=("litter",)),
    ),
    Model(
        key="ratpup_d",
        dataset="ratpup",
        formula="weight ~ treatment + sex + litsize + (1 + sex|litter)",
        statsmodels=StatsmodelsSpec(
            "weight ~ treatment + sex + litsize", groups=("litter",), re_formula="~sex"
        ),
    ),
    Model(
        key="cake",
        dataset="cake",
        formula="angle ~ recipe*temperature + (1|recipe:replicate)",
        factors=("temperature",),
        statsmodels=StatsmodelsSpec("angle ~ recipe*temperature", groups=("recipe", "replicate")),
        notes=("temperature is an unordered factor (as in the lme4 reference fit)",),
    ),
    Model(
        key="orthodont",
        dataset="orthodont",
        formula="distance ~ age*Sex + (age|Subject)",
        statsmodels=StatsmodelsSpec("distance ~ age*Sex", groups=("Subject",), re_formula="~age"),
    ),
    Model(
        key="insteval_1",
        dataset="InstEval",
        formula="y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
        large=True,
        factors=("s", "d", "service", "dept"),
        statsmodels=StatsmodelsSpec(
            "y ~ 1 + service",
            groups=ONE_GROUP,
            re_formula="0",
            vc_formula={"s": "0 + C(s)", "d": "0 + C(d)", "dept": "0 + C(dept)"},
            use_sparse=True,
        ),
        statsmodels_skip="too slow",
    ),
    Model(
        key="insteval_2",
        dataset="InstEval",
        formula="y ~ 1 + service*dept + (1|s) + (1|d)",
        large=True,
        factors=("s", "d", "service", "dept"),
        statsmodels=StatsmodelsSpec(
            "y ~ 1 + service*dept",
            groups=ONE_GROUP,
            re_formula="0",
            vc_formula={"s": "0 + C(s)", "d": "0 + C(d)"},
            use_sparse=True,
        ),
        statsmodels_skip="too slow",
    ),
    # The synthetic 1e6-row designs of issue 8: every contestant runs under a fit-time cap
    # and a memory cap (run.py --synthetic-timeout, --memory-cap-gb); see synthetic.py.
    Model(
        key="synthetic_crossed",
        dataset="synthetic",
        formula=synthetic.CROSSED.formula,
        large=True,
        synthetic="crossed",
        statsmodels=StatsmodelsSpec(
            "y ~ x",
            groups=ONE_GROUP,
            re_formula="0",
            vc_formula={"a": "0 + C(a)", "b": "0 + C(b)"},
            use_sparse=True,
        ),
        notes=(synthetic.CROSSED.describe,),
    ),
    Model(
        key="synthetic_slope",
        dataset="synthetic",
        formula=synthetic.SLOPE.formula,
        large=True,
        synthetic="slope",
        statsmodels=StatsmodelsSpec("y ~ x", groups=("g",), re_formula="~x"),
        notes=(synthetic.SLOPE.describe,),
    ),
)

BY_KEY = {m.key: m for m in MODELS}

# The --quick selection: small models whose fits take milliseconds.
QUICK = ("dyestuff", "sleepstudy_int", "sleepstudy_corr", "penicillin", "pastes", "ratpup_b")


def dataset_missing(model: Model) -> str | None:
    """Why the model's data cannot be had on this machine, or None."""
    if model.dataset == "InstEval" and not INSTEVAL_CSV.is_file():
        return f"InstEval.csv not found at {INSTEVAL_CSV} (it is not embedded in the package)"
    return None


def load_frame(model: Model, scale: float = 1.0) -> pd.DataFrame:
    """The DataFrame every contestant fits, factor columns already turned into strings.

    ``scale`` applies to the synthetic designs only (their warm-up fits a 1% version).
    """
    if model.synthetic is not None:
        return synthetic.simulate(model.synthetic, scale)
    if model.dataset == "InstEval":
        frame = pd.read_csv(INSTEVAL_CSV)
    else:
        import mixedmodels as mm

        frame = mm.load_dataset(model.dataset)
    frame = frame.copy()
    for column in model.factors:
        frame[column] = frame[column].astype(str)
    return frame
