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


def richardson(dev, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central differences with one Richardson step: O(h^4) truncation error."""

    def central(i: int, step: float) -> float:
        e = np.zeros_like(theta)
        e[i] = step
        return (dev(theta + e) - dev(theta - e)) / (2 * step)

    return np.array([(4 * central(i, h) - central(i, 2 * h)) / 3 for i in range(theta.shape[0])])
