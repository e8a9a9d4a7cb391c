"""Run the GLMM part of the benchmark (issue 14) and assemble its results.

The protocol is the LMM tables': every (model, contestant) pair in a fresh process, one
warm-up fit, then repeated timed fits (worker.py's rule), small models in --rounds rounds
with the contestants interleaved and the median of the rounds' medians reported. lme4 is
one more contestant in those rounds (an R process per model, ``lme4_glmm.py``), unless
``--lme4 file`` takes its numbers from the reference files. Every process runs under the
supervisor (``supervise.py``): the time cap, the memory cap and a sampled RSS apply to
Python and R alike; the synthetic design runs once, under --synthetic-timeout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import glmm_contestants
import glmm_models
import lme4_glmm
import machine
import supervise
from glmm_models import GlmmModel

HERE = Path(__file__).resolve().parent
# Seconds a synthetic-design process may spend simulating or reading the data and on
# its 1% warm-up fit before its fit-time cap starts (as run.py's SYNTHETIC_SETUP_S).
SYNTHETIC_SETUP_S = 300.0
PYTHON_CONTESTANTS = ("ours", "mixedlm", "lme_python")
# |logLik - lme4's reference optimum| above which a fit is flagged. lme4's own default
# fits report logLik up to 4e-4 off (PIRLS stopped at tolPwrss = 1e-7).
LOGLIK_TOL = 1e-3


def _python_process(
    ckey: str, model: GlmmModel, quick: bool, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    """One Python contestant on one model in a supervised worker process."""
    cmd = [sys.executable, str(HERE / "worker.py"), ckey, model.key]
    if quick:
        cmd.append("--quick")
    cap = args.synthetic_timeout if model.synthetic is not None else args.small_timeout
    setup = SYNTHETIC_SETUP_S if model.synthetic is not None else args.small_timeout
    out = supervise.run_supervised(
        cmd, env, fit_timeout=cap, setup_timeout=setup, memory_cap_mb=args.memory_cap_gb * 1024
    )
    base = {"model": model.key, "contestant": ckey, "sampled_peak_rss_mb": out.peak_rss_mb}
    if out.status != "exited":
        reason = out.reason
        if model.synthetic is None and out.status == "timeout":
            reason = f"too slow (stopped at the {cap:.0f} s cap)"
        print(f"  {ckey:12s} {model.key}: {reason}", file=sys.stderr, flush=True)
        return {**base, "status": "stopped", "reason": reason}
    docs = [line for line in out.stdout if line.startswith('{"contestant"')]
    if out.returncode != 0 or not docs:
        return {**base, "status": "failed", "reason": "worker " + out.crash_reason()}
    doc = json.loads(docs[-1])
    row = doc["rows"][0]
    row["sampled_peak_rss_mb"] = out.peak_rss_mb
    if "version" in doc:
        row["version"] = doc["version"]
    return row


def _skip_reason(ckey: str, model: GlmmModel) -> str | None:
    if ckey == "statsmodels":
        return glmm_contestants.STATSMODELS_REASON
    if ckey == "lme4":
        return None
    adapter = glmm_contestants.BY_KEY[ckey]
    return adapter.missing() or adapter.skip(model)


def _merge(rows: dict[tuple[str, str], dict], row: dict) -> None:
    """Keep the first round's row; later rounds add their median and their fits."""
    key = (row["model"], row["contestant"])
    previous = rows.get(key)
    if previous is not None and previous.get("status") == "ok" and row.get("status") == "ok":
        previous["round_medians"].append(row["median_s"])
        previous["times_s"] = previous["times_s"] + row["times_s"]
        previous["peak_rss_mb"] = max(previous["peak_rss_mb"], row["peak_rss_mb"])
        return
    if row.get("status") == "ok":
        row["round_medians"] = [row["median_s"]]
    rows[key] = row


def run(
    chosen: list[GlmmModel], args: argparse.Namespace, env: dict[str, str], live_lme4: bool
) -> dict[str, Any]:
    """Time every contestant on ``chosen``; the ``glmm`` part of the results document."""
    quick = bool(args.quick)
    python_keys = [k for k in args.contestants if k in PYTHON_CONTESTANTS]
    order = [*python_keys, *(["lme4"] if live_lme4 else [])]
    listed = [*python_keys, *(["statsmodels"] if "statsmodels" in args.contestants else [])]
    results: dict[str, Any] = {
        "settings": {
            "quick": quick,
            "models": [m.key for m in chosen],
            "contestants": [*listed, "lme4"],
            "blas_threads": args.blas_threads,
            "small_timeout_s": args.small_timeout,
            "synthetic_timeout_s": args.synthetic_timeout,
            "memory_cap_gb": args.memory_cap_gb,
            "loglik_tol": LOGLIK_TOL,
        },
        "machine": machine.describe(),
        "load_before": machine.load_average(),
        "contestant_versions": {},
        "models": {},
        "notes": [],
    }
    rows: dict[tuple[str, str], dict] = {}
    rounds = 1 if quick else max(1, args.rounds)
    lme4_version = ""
    for round_index in range(rounds):
        for ckey in order:
            print(f"[glmm {ckey}] round {round_index + 1}", file=sys.stderr, flush=True)
            for model in chosen:
                if round_index > 0 and (model.large or model.synthetic is not None):
                    continue
                if round_index > 0 and rows.get((model.key, ckey), {}).get("status") != "ok":
                    continue  # skipped, failed or too slow in round 1: not tried again
                reason = _skip_reason(ckey, model)
                if reason:
                    rows[(model.key, ckey)] = {
                        "model": model.key,
                        "contestant": ckey,
                        "status": "skipped",
                        "reason": reason,
                    }
                    continue
                if ckey == "lme4":
                    synthetic = model.synthetic is not None
                    row, version = lme4_glmm.run_live(
                        model,
                        quick,
                        fit_timeout=args.synthetic_timeout if synthetic else args.small_timeout,
                        setup_timeout=SYNTHETIC_SETUP_S if synthetic else args.small_timeout,
                        memory_cap_mb=args.memory_cap_gb * 1024,
                        env=env,
                    )
                    lme4_version = lme4_version or version
                else:
                    row = _python_process(ckey, model, quick, args, env)
                    version = row.pop("version", None)
                    if version:
                        results["contestant_versions"][ckey] = version
                _merge(rows, row)
    for row in rows.values():
        medians = row.pop("round_medians", None)
        if medians and len(medians) > 1:
            row["median_s"] = statistics.median(medians)
            row["round_medians_s"] = medians

    if live_lme4:
        results["lme4"] = {
            "source": "live",
            "description": f"{lme4_version or 'R with lme4'}, timed live on this machine "
            "through Rscript (glmer() with default glmerControl(); glmer.nb() with its "
            "defaults), one R process per model, in the same rounds as the Python "
            "contestants",
        }
    else:
        results["lme4"] = {
            "source": "file",
            "description": "lme4's times and logLiks are those of the reference files "
            "(tests/reference/glmm/*.json `timing`: median of 3 default-control fits in one "
            "warm R session, R 4.2.2, lme4 1.1.31, reference BLAS, on the project's 2-core "
            "VM), not measured in this run",
        }
        for model in chosen:
            ref_row = lme4_glmm.from_reference(model)
            if ref_row is None:
                ref_row = {
                    "model": model.key,
                    "contestant": "lme4",
                    "status": "skipped",
                    "reason": "no reference timing (--lme4 file)",
                }
            rows[(model.key, "lme4")] = ref_row

    for model in chosen:
        model_rows = {c: rows[(model.key, c)] for c in [*listed, "lme4"] if (model.key, c) in rows}
        n = next((r["n"] for r in model_rows.values() if r.get("n")), None)
        results["models"][model.key] = {
            "formula": model.formula,
            "family": model.family,
            "nagq": model.nagq,
            "spellings": {
                lib: model.spelling(lib) for lib in ("ours", "lme4", "mixedlm", "lme_python")
            },
            "n": n,
            "reference_loglik": glmm_models.reference_loglik(model),
            "synthetic": model.synthetic,
            "rows": model_rows,
        }
    results["notes"] += peer_notes(results)
    results["load_after"] = machine.load_average()
    busy = machine.busy(results["load_before"], results["load_after"])
    if busy:
        results["notes"].append(busy)
    return results


def peer_notes(results: dict[str, Any]) -> list[str]:
    """Facts about the peers' fits worth a line on the page (read from the rows)."""
    notes = []
    for mk, entry in results["models"].items():
        rows = entry["rows"]
        mixedlm = rows.get("mixedlm", {})
        theta = (mixedlm.get("estimates") or {}).get("nb_theta")
        if mixedlm.get("status") == "ok" and theta is not None:
            ours = ((rows.get("ours") or {}).get("estimates") or {}).get("nb_theta")
            also = f"; ours and lme4 estimate {ours:.4f}" if ours is not None else ""
            notes.append(
                f"{mk}: mixedlm's glmer_nb holds the negative binomial's theta at its "
                f"argument's default ({theta:g}) instead of estimating it{also}: a different "
                "model, hence its lower logLik; its time is not that of a glmer.nb fit."
            )
        lme4 = rows.get("lme4", {})
        if lme4.get("status") == "ok" and lme4.get("messages"):
            notes.append(f"{mk}: lme4 warned: {lme4['messages']}")
        lp = rows.get("lme_python", {})
        same = _matching_nagq0(mk, lp)
        if same is not None:
            notes.append(
                f"{mk}: lme-python's logLik equals lme4's nAGQ = 0 optimum ({same}) to within "
                "1e-5: its nAGQ = 1 fit stops where beta is estimated inside PIRLS, short of "
                "the Laplace optimum."
            )
        eff = (lp.get("estimates") or {}).get("effective_n_agq")
        if lp.get("status") == "ok" and eff is not None and eff != entry["nagq"]:
            notes.append(
                f"{mk}: lme-python was asked for nAGQ = {entry['nagq']} and reports "
                f"effective_n_agq = {eff} in its diagnostics."
            )
    return notes


def _matching_nagq0(key: str, row: dict) -> str | None:
    """The nAGQ = 0 model whose reference logLik a Laplace fit's ``row`` reached, if any."""
    model = glmm_models.BY_KEY[key]
    if model.nagq != 1 or row.get("status") != "ok" or "loglik" not in row:
        return None
    for other in glmm_models.MODELS:
        if other.nagq != 0 or other.dataset != model.dataset:
            continue
        if other.r_formula != model.r_formula or other.family != model.family:
            continue
        ref = glmm_models.reference_loglik(other)
        if ref is not None and abs(float(row["loglik"]) - ref) < 1e-5:
            return other.key
    return None
