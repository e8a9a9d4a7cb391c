"""Per-fit overheads removed from ``lmer`` keep every result as it was.

Results computed on first use (the factor at the optimum, the estimates, the criterion),
the cached formula parse, DataFrames that skip the streaming check, and the BLAS thread
limit that is skipped when there is nothing to limit.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import FormulaError
from mixedmodels.formula import ModelFormula, parse_formula
from mixedmodels.linalg.blas_threads import blas_threads_for
from mixedmodels.linalg.solution import estimate

SLEEP = "Reaction ~ Days + (Days | Subject)"
PASTES = "strength ~ 1 + (1 | batch/cask)"


@pytest.fixture(scope="module", params=[SLEEP, PASTES], ids=["sleepstudy", "pastes"])
def fit(request):
    data = "sleepstudy" if request.param == SLEEP else "pastes"
    return mm.lmer(request.param, data)


# -- lazy results ------------------------------------------------------------------------
def test_small_model_builds_the_blocked_engine_only_on_first_use():
    """A small model with 1 x 1 templates is fitted in dense form, which yields the estimates
    and the criterion; the cross-product blocks, the blocked deviance and its factor wait
    until asked for."""
    fit = mm.lmer(PASTES, "pastes")
    assert fit.model.is_small()
    assert {"estimates", "objective"} <= set(vars(fit))
    assert not {"factor", "deviance_function"} & set(vars(fit))
    assert fit.model._cross_products is None
    assert fit.converged and not fit.singular
    _ = fit.fixef, fit.se, fit.sigma, fit.loglik, fit.ranef
    assert "factor" not in vars(fit) and fit.model._cross_products is None
    _ = fit.ranef_condsd  # conditional variances come from the blocked factor
    assert "factor" in vars(fit) and fit.model._cross_products is not None
    assert fit.factor is fit.factor  # computed once, then kept


def test_small_model_with_vector_templates_builds_the_blocked_engine_only_on_first_use():
    """(Days | Subject): Newton steps from the start evaluate the dense system (values,
    derivatives, the estimates at the optimum); the cross-product blocks and the blocked
    deviance wait until asked for. BOBYQA (options given) evaluates the blocked deviance."""
    fit = mm.lmer(SLEEP, "sleepstudy")
    assert fit.model.is_small()
    assert {"estimates", "objective"} <= set(vars(fit))
    assert not {"factor", "deviance_function"} & set(vars(fit))
    assert fit.model._cross_products is None and fit.model._deviances == {}
    by_bobyqa = mm.lmer(SLEEP, "sleepstudy", control=mm.OptimizerOptions())
    assert {"estimates", "objective", "deviance_function"} <= set(vars(by_bobyqa))
    assert "factor" not in vars(by_bobyqa)
    _ = fit.ranef_condsd  # conditional variances come from the blocked factor
    assert "factor" in vars(fit) and fit.model._cross_products is not None


def test_large_model_computes_its_factor_and_estimates_on_first_use(monkeypatch):
    import mixedmodels.linalg.choice as dense_module

    monkeypatch.setattr(dense_module, "DENSE_MAX", 0)
    fit = mm.lmer(SLEEP, "sleepstudy")
    assert not fit.model.is_small()
    for name in ("factor", "estimates", "objective"):
        assert name not in vars(fit)
    assert fit.converged and not fit.singular  # needs neither
    _ = fit.fixef
    assert "factor" in vars(fit) and "estimates" in vars(fit)
    assert fit.estimates is fit.estimates


def test_dense_estimates_equal_the_blocked_engine(fit):
    """The dense estimates (dense_deviance.py) and the blocked ones (solution.estimate) are
    two computations of the same numbers: equal to rounding (1e-10 relative)."""
    dev = fit.deviance_function
    factor = dev.factor(fit.opt.final_theta)
    blocked = estimate(dev.system, factor, dev.reml)
    assert fit.objective == pytest.approx(float(dev.objective(factor)), rel=1e-12)
    assert fit.sigma == pytest.approx(blocked.sigma, rel=1e-10)
    np.testing.assert_allclose(fit.estimates.beta, blocked.beta, rtol=1e-10)
    np.testing.assert_allclose(fit.estimates.vcov_beta, blocked.vcov_beta, rtol=1e-10)
    for got, want in zip(fit.estimates.b, blocked.b, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.max(np.abs(want)))
    np.testing.assert_array_equal(fit.factor.LXX, factor.LXX)


def test_criterion_agrees_with_the_optimiser(fit):
    assert fit.objective == pytest.approx(fit.opt.final_objective, rel=1e-12, abs=1e-9)
    assert fit.loglik == -0.5 * fit.objective
    assert fit.reml_criterion == fit.objective


def test_every_access_order_gives_the_same_results():
    a = mm.lmer(SLEEP, "sleepstudy")
    b = mm.lmer(SLEEP, "sleepstudy")
    _ = b.ranef_condsd, b.varcorr  # b computes its factor through another attribute
    assert a.to_dict() == b.to_dict()
    pd.testing.assert_frame_equal(a.ranef_table(), b.ranef_table())
    assert str(a.summary()) == str(b.summary())


# -- formula parsing ------------------------------------------------------------------------
def test_the_same_formula_text_shares_one_parse():
    first = parse_formula("y ~ x + (1 | g)")
    assert parse_formula("y ~ x + (1 | g)") is first
    assert parse_formula("y ~ x + (1 | h)") is not first
    assert parse_formula(first) is first


def test_a_bad_formula_fails_every_time():
    for _ in range(2):
        with pytest.raises(FormulaError) as err:
            parse_formula("y ~ x + (1 | ")
        assert err.value.position is not None


def test_a_parsed_formula_cannot_be_changed():
    parsed = parse_formula("y ~ x + (1 | g)")
    assert isinstance(parsed, ModelFormula)
    with pytest.raises(AttributeError):
        parsed.text = "z ~ 1"  # type: ignore[misc]


# -- in-memory data -------------------------------------------------------------------------
def test_a_dataframe_is_fitted_in_memory_whatever_its_columns():
    # Columns named like the ChunkSource protocol's members once made a DataFrame look
    # like a streamed source to the protocol check.
    df = mm.load_dataset("sleepstudy").assign(name="x", check=1.0, total_rows=2.0, chunks=3.0)
    fit = mm.lmer(SLEEP, df)
    assert fit.model.has_rows
    assert len(fit.fitted) == len(df)


# -- BLAS threads ---------------------------------------------------------------------------
def _blas_thread_counts() -> list[int]:
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_no_thread_limit_when_blas_already_uses_one_thread():
    from threadpoolctl import threadpool_limits

    fit = mm.lmer(SLEEP, "sleepstudy")
    with threadpool_limits(limits=1, user_api="blas"):
        assert isinstance(blas_threads_for(fit.model.rest_size), contextlib.nullcontext)


def test_thread_limit_when_blas_uses_more_threads():
    from threadpoolctl import threadpool_limits

    fit = mm.lmer(SLEEP, "sleepstudy")
    with threadpool_limits(limits=2, user_api="blas"):
        if not any(n > 1 for n in _blas_thread_counts()):
            pytest.skip("the BLAS library cannot use two threads here")
        limiter = blas_threads_for(fit.model.rest_size)
        assert not isinstance(limiter, contextlib.nullcontext)
        with limiter:
            assert all(n == 1 for n in _blas_thread_counts())


def test_thread_limit_from_a_worker_thread_restores_the_counts():
    """Off the main thread the limit goes through threadpoolctl's controllers, which leave a
    pool another thread controls (here the main thread, through threadpool_limits) alone:
    OpenBLAS's own functions, called from the worker, would have set it to one thread. The
    main thread's limit still applies, and the counts come back either way."""
    import threading

    from threadpoolctl import threadpool_limits

    fit = mm.lmer(SLEEP, "sleepstudy")
    with threadpool_limits(limits=2, user_api="blas"):
        if not any(n > 1 for n in _blas_thread_counts()):
            pytest.skip("the BLAS library cannot use two threads here")
        before = _blas_thread_counts()
        inside: list[list[int]] = []

        def work() -> None:
            with blas_threads_for(fit.model.rest_size):
                inside.append(_blas_thread_counts())

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        assert inside == [before]
        assert _blas_thread_counts() == before
        with blas_threads_for(fit.model.rest_size):
            assert all(n == 1 for n in _blas_thread_counts())
        assert _blas_thread_counts() == before


def test_direct_thread_functions_only_for_openblas_on_pthreads():
    from mixedmodels.linalg.blas_threads import _direct_openblas

    class Stub:
        internal_api = "mkl"

    assert _direct_openblas(Stub()) is None

    class OpenMP:
        internal_api = "openblas"
        threading_layer = "openmp"

    assert _direct_openblas(OpenMP()) is None
