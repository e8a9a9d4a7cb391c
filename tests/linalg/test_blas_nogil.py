"""dsyrk and dtrsm through the loaded OpenBLAS's CBLAS symbols (GIL released) give SciPy's
wrappers' answers, and fall back on those wrappers where the symbols are not found."""

import numpy as np
import pytest
from scipy.linalg.blas import dsyrk, dtrsm

from mixedmodels.linalg import blas_nogil


@pytest.fixture(params=["cblas", "scipy"])
def path(request, monkeypatch):
    """Each test on the bound CBLAS routines and on SciPy's wrappers (the fallback)."""
    if request.param == "scipy":
        monkeypatch.setattr(blas_nogil, "_BOUND", [None])
    return request.param


def test_the_cblas_routines_are_bound_with_scipys_openblas():
    # SciPy's wheels carry an OpenBLAS: the GIL-free path is the one taken there.
    assert blas_nogil._routines() is not None


def test_syrk_adds_the_lower_triangle_in_place(path):
    rng = np.random.default_rng(3)
    a = np.asfortranarray(rng.normal(size=(40, 13)))
    c = np.asfortranarray(np.tril(rng.normal(size=(40, 40))))
    expected = dsyrk(1.0, a, beta=1.0, c=c.copy(order="F"), trans=0, lower=1)
    upper_before = np.triu(c, 1).copy()
    out = blas_nogil.syrk_lower(a, c)
    assert out is c
    np.testing.assert_array_equal(np.tril(c), np.tril(expected))
    np.testing.assert_array_equal(np.triu(c, 1), upper_before)  # not touched
    np.testing.assert_allclose(np.tril(c - np.tril(expected)), 0.0)


def test_syrk_of_a_transposed_c_ordered_panel(path):
    # what the rank update passes: the transpose of a C-ordered (columns x q_r) array
    rng = np.random.default_rng(4)
    D = rng.normal(size=(24, 50))
    c = np.zeros((50, 50), order="F")
    blas_nogil.syrk_lower(D[:17].T, c)
    np.testing.assert_allclose(np.tril(c), np.tril(D[:17].T @ D[:17]), rtol=1e-13, atol=1e-13)


def test_trsm_solves_the_transposed_upper_system_in_place(path):
    rng = np.random.default_rng(5)
    m, n = 30, 11
    u = np.asfortranarray(np.triu(rng.normal(size=(m, m))) + 6.0 * np.eye(m))
    b = np.asfortranarray(rng.normal(size=(m, 20)))[:, :n]  # a Fortran column slice
    b0 = b.copy(order="F")
    expected = dtrsm(1.0, u, b0, lower=0, trans_a=1)
    x = blas_nogil.trsm_upper_transposed(u, b)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_allclose(u.T @ x, b0, rtol=1e-12, atol=1e-12)
    if path == "cblas":
        assert x is b  # solved in place


def test_layouts_it_cannot_take_go_to_scipy():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(20, 7))  # C-ordered: SciPy's wrapper copies it
    c = np.zeros((20, 20), order="F")
    blas_nogil.syrk_lower(a, c)
    np.testing.assert_allclose(np.tril(c), np.tril(a @ a.T), rtol=1e-13, atol=1e-13)


def test_two_threads_at_once_give_the_sequential_results():
    """The rank update calls syrk_lower from two threads at the same time (the GIL released):
    each thread's sums equal the same calls made one after the other."""
    import threading

    rng = np.random.default_rng(7)
    panels = [np.asfortranarray(rng.normal(size=(300, 64))) for _ in range(6)]
    sequential = [np.zeros((300, 300), order="F") for _ in range(2)]
    for g in range(2):
        for a in panels[g::2]:
            blas_nogil.syrk_lower(a, sequential[g])
    threaded = [np.zeros((300, 300), order="F") for _ in range(2)]

    def work(g):
        for _ in range(20):
            threaded[g][...] = 0.0
            for a in panels[g::2]:
                blas_nogil.syrk_lower(a, threaded[g])

    workers = [threading.Thread(target=work, args=(g,)) for g in range(2)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for g in range(2):
        np.testing.assert_array_equal(threaded[g], sequential[g])
