"""Models and a reference derivative shared by the engine's gradient tests.

The model list covers every engine path: one term (closed-form 1x1 and 2x2 blocks, and a
3x3 block), `||` templates with fixed zeros, crossed and nested terms, a term estimated
at 0. ``richardson`` is the finite-difference reference for analytic gradients.
"""

from __future__ import annotations

import numpy as np

CASES = [
    ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
    ("sleepstudy", "Reaction ~ Days + (Days||Subject)"),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
    ("ratpup", "weight ~ treatment + sex + litsize + (1 + sex|litter)"),
    ("sleepstudy", "Reaction ~ Days + (Days|Subject) + (1|Days)"),
    ("orthodont", "distance ~ age * Sex + (age|Subject)"),
]


def richardson(dev, theta: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central differences with one Richardson step: O(h^4) truncation error.

    The step is relative, ``h * max(1, |theta_i|)``, with ``h`` near eps^(1/5), where the
    O(h^4) truncation and the rounding error of the deviance (about eps * |d| / h) balance.
    A smaller fixed step (1e-4) made the reference, not the gradient, wrong on this CPU's
    BLAS: Pastes at theta ~ 4 differed by 2e-6 from both analytic gradients, by 2e-9 at 1e-3.
    """

    def central(i: int, step: float) -> float:
        e = np.zeros_like(theta)
        e[i] = step
        return (dev(theta + e) - dev(theta - e)) / (2 * step)

    steps = h * np.maximum(1.0, np.abs(theta))
    return np.array(
        [(4 * central(i, steps[i]) - central(i, 2 * steps[i])) / 3 for i in range(theta.shape[0])]
    )


def product_frame(seed: int, users: int, per: int, items: int):
    """The product design in miniature, for ``y ~ x + (1 + x | user) + (1 | item)``:
    ``users`` users with ``per`` consecutive events each, an item per event drawn from
    ``items``; truth: intercept 1, slope 0.5, user intercept SD 0.5 and slope SD 0.3, item
    SD 0.4, sigma 1 (ids as strings, as users' data have them)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(users), per)
    item = rng.integers(0, items, users * per)
    x = rng.normal(size=users * per)
    y = (
        1.0
        + 0.5 * x
        + rng.normal(0, 0.5, users)[user]
        + rng.normal(0, 0.3, users)[user] * x
        + rng.normal(0, 0.4, items)[item]
        + rng.normal(size=users * per)
    )
    return pd.DataFrame({"y": y, "x": x, "user": user.astype(str), "item": item.astype(str)})
