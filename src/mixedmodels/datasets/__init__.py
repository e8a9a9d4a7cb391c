"""Classic mixed-model datasets shipped inside the package.

The CSV files in this folder are byte-identical to the files the R reference
fits in ``tests/reference`` (lme4::lmer) and the GLMM references (lme4::glmer; cbpp,
grouseticks, VerbAgg, Contraception) were computed from, so a model fitted to
``load_dataset(name)`` can be compared with lme4's numbers directly. In VerbAgg and
Contraception the binary responses are already 0/1 (``r2``: 1 = 'Y', i.e. a response
of 'perhaps' or 'yes'; ``use``: 1 = 'Y'); cbpp's ``period`` and grouseticks' ``YEAR``
are numeric codes of factors (write ``C(period)``).

Examples
--------
>>> from mixedmodels.datasets import load_dataset
>>> load_dataset("ratpup").shape
(322, 6)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from mixedmodels.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DatasetInfo", "dataset_names", "list_datasets", "load_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """What one embedded dataset is and where it comes from."""

    name: str
    filename: str
    description: str
    source: str


# Order of this table is the order of `list_datasets()`: the rat-pup data first,
# as it is the running example of the documentation.
_DATASETS: tuple[DatasetInfo, ...] = (
    DatasetInfo(
        "ratpup",
        "ratpup.csv",
        "Birth weights of 322 rat pups in 27 litters; 3 doses of a compound, pup sex, litter size",
        "West, Welch & Galecki (2014), Linear Mixed Models, 2nd ed., ch. 3",
    ),
    DatasetInfo(
        "sleepstudy",
        "sleepstudy.csv",
        "Reaction times of 18 subjects over 10 days of sleep deprivation",
        "Belenky et al. (2003), J. Sleep Res. 12:1-12",
    ),
    DatasetInfo(
        "Dyestuff",
        "Dyestuff.csv",
        "Yield of dyestuff, 5 preparations from each of 6 batches",
        "Davies & Goldsmith (1972), Statistical Methods in Research and Production",
    ),
    DatasetInfo(
        "Dyestuff2",
        "Dyestuff2.csv",
        "Simulated yields with the Dyestuff design; the batch variance is estimated as 0",
        "Box & Tiao (1973), Bayesian Inference in Statistical Analysis",
    ),
    DatasetInfo(
        "Penicillin",
        "Penicillin.csv",
        "Inhibition-zone diameters of 6 penicillin samples on 24 plates (crossed)",
        "Davies & Goldsmith (1972), Statistical Methods in Research and Production",
    ),
    DatasetInfo(
        "Pastes",
        "Pastes.csv",
        "Paste strength, 2 assays of 3 casks in each of 10 delivery batches (nested)",
        "Davies & Goldsmith (1972), Statistical Methods in Research and Production",
    ),
    DatasetInfo(
        "cake",
        "cake.csv",
        # (short enough for one line of `mixedmodels datasets` next to "Contraception")
        "Breaking angle of chocolate cakes: 3 recipes x 6 temperatures, 15 replicates (split plot)",
        "Cook (1938), MS thesis, Iowa State College",
    ),
    DatasetInfo(
        "Orthodont",
        "Orthodont.csv",
        "Pituitary-pterygomaxillary distance of 27 children at ages 8, 10, 12, 14",
        "Potthoff & Roy (1964), Biometrika 51:313-326",
    ),
    # GLMM data: the inputs of the lme4::glmer references (binary responses recoded to 0/1).
    DatasetInfo(
        "cbpp",
        "cbpp.csv",
        "Contagious bovine pleuropneumonia: new cases among the cattle of 15 herds, 4 periods",
        "Lesnoff et al. (2004), Prev. Vet. Med. 64:27-40 (lme4::cbpp)",
    ),
    DatasetInfo(
        "grouseticks",
        "grouseticks.csv",
        "Ticks on 403 red grouse chicks in 118 broods at 63 locations, 1995-1997",
        "Elston et al. (2001), Parasitology 122:563-569 (lme4::grouseticks)",
    ),
    DatasetInfo(
        "VerbAgg",
        "VerbAgg.csv",
        "Verbal aggression, 316 people x 24 items; r2 = 1 for 'perhaps' or 'yes', 0 for 'no'",
        "De Boeck & Wilson (2004), Explanatory Item Response Models (lme4::VerbAgg)",
    ),
    DatasetInfo(
        "Contraception",
        "Contraception.csv",
        "Contraceptive use (use = 1) of 1934 women in 60 districts of Bangladesh",
        "Huq & Cleland (1990), Bangladesh Fertility Survey 1989 (mlmRev::Contraception)",
    ),
)

_BY_KEY: dict[str, DatasetInfo] = {info.name.lower(): info for info in _DATASETS}


def dataset_names() -> tuple[str, ...]:
    """Return the names of the embedded datasets, in display order."""
    return tuple(info.name for info in _DATASETS)


def find_dataset(name: str) -> DatasetInfo | None:
    """Return the entry for ``name`` (case-insensitive), or None if there is none."""
    return _BY_KEY.get(name.strip().lower())


def load_dataset(name: str) -> pd.DataFrame:
    """Load an embedded dataset by name (case-insensitive) as a new DataFrame.

    Columns keep the types pandas gives them when reading the CSV: identifiers
    such as ``litter`` (ratpup) or ``Subject`` (sleepstudy) stay numeric; the
    model layer treats every grouping variable as a factor.

    Parameters
    ----------
    name
        One of ``dataset_names()``: ratpup, sleepstudy, Dyestuff, Dyestuff2,
        Penicillin, Pastes, cake, Orthodont, cbpp, grouseticks, VerbAgg, Contraception.

    Returns
    -------
    pandas.DataFrame
        A fresh copy: changing it does not affect later calls.

    Raises
    ------
    DataError
        If there is no dataset of that name; the message lists the names.

    Examples
    --------
    >>> load_dataset("Sleepstudy").columns.tolist()
    ['Reaction', 'Days', 'Subject']
    """
    if not isinstance(name, str):
        raise DataError(
            f"dataset name must be a string, got {type(name).__name__}; "
            f"available datasets: {', '.join(dataset_names())}"
        )
    info = find_dataset(name)
    if info is None:
        raise DataError(unknown_dataset_message(name))
    return _read_embedded(info.filename).copy()


def unknown_dataset_message(name: str) -> str:
    """Say that ``name`` is not an embedded dataset, suggest a close one, list them all."""
    keys = list(_BY_KEY)
    close = difflib.get_close_matches(name.strip().lower(), keys, n=1, cutoff=0.6)
    hint = f" (did you mean '{_BY_KEY[close[0]].name}'?)" if close else ""
    return f"unknown dataset '{name}'{hint}; available datasets: {', '.join(dataset_names())}"


def list_datasets() -> pd.DataFrame:
    """Describe the embedded datasets: name, rows, columns, variables, description, source.

    Examples
    --------
    >>> list_datasets().loc[0, "name"]
    'ratpup'
    """
    import pandas as pd

    records = []
    for info in _DATASETS:
        frame = _read_embedded(info.filename)
        records.append(
            {
                "name": info.name,
                "rows": int(frame.shape[0]),
                "columns": int(frame.shape[1]),
                "variables": ", ".join(str(c) for c in frame.columns),
                "description": info.description,
                "source": info.source,
            }
        )
    return pd.DataFrame.from_records(
        records, columns=["name", "rows", "columns", "variables", "description", "source"]
    )


@cache
def _read_embedded(filename: str) -> pd.DataFrame:
    # Cached and never handed out directly: callers get a copy.
    import pandas as pd

    with resources.files(__name__).joinpath(filename).open("rb") as handle:
        return pd.read_csv(handle)
