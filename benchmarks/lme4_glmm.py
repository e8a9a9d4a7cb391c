"""The lme4 column of the GLMM tables: ``glmer`` / ``glmer.nb`` timed live through Rscript,
or the timings of the reference files (``tests/reference/glmm/*.json``, ``timing``).

Live, each model runs in an R process of its own, as each Python contestant does: the CSV
is read (not timed), one warm-up fit is made, then timed fits with ``gc()`` before each
until the Python workers' rule says enough (worker.py: 5 to 25 fits, about 2 s of them; 3
with --quick); the synthetic design gets one warm-up fit on its 1% version and one timed
fit. The process reports its peak resident memory (``VmHWM``) and runs under the
supervisor's fit-time and memory caps. Default ``glmerControl()``; ``glmer.nb`` with its
defaults for the negative binomial.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import glmm_models
import supervise
from glmm_models import GlmmModel
from worker import QUICK_REPEATS, SMALL_BUDGET_S, SMALL_MAX_REPEATS, SMALL_MIN_REPEATS

R_FAMILIES = {"binomial": "binomial", "poisson": "poisson"}

# One model per R process. Lines out: FIT_STARTED (the supervisor's fit clock starts),
# TIME <seconds> per timed fit, FIXEF / SD / NBTHETA for the estimates, then
# RESULT <logLik> <VmHWM kB> <messages> and VERSION; nothing beyond lme4 is needed.
_R_TEMPLATE = r"""
suppressMessages(library(lme4))
read <- function(path) {{
  d <- read.csv(path, stringsAsFactors = FALSE)
  for (v in c({factors})) d[[v]] <- factor(as.character(d[[v]]))
  for (v in names(d)) if (is.character(d[[v]])) d[[v]] <- factor(d[[v]])
  d
}}
f <- as.formula("{formula}")
fit_once <- function(data) {fit_call}
warm <- read("{warm_csv}")
fit <- fit_once(warm)
d <- read("{csv}")
rm(warm, fit)
invisible(gc())
cat("{started}\n")
flush(stdout())
times <- numeric(0)
repeat {{
  if ({enough}) break
  invisible(gc())
  t0 <- proc.time()[["elapsed"]]
  fit <- fit_once(d)
  times <- c(times, proc.time()[["elapsed"]] - t0)
  cat(sprintf("TIME\t%.9g\n", times[length(times)]))
  flush(stdout())
}}
fe <- fixef(fit)
for (i in seq_along(fe)) cat(sprintf("FIXEF\t%s\t%.15g\n", names(fe)[i], fe[[i]]))
vc <- as.data.frame(VarCorr(fit))
for (i in which(is.na(vc$var2)))
  cat(sprintf("SD\t%s: %s\t%.15g\n", vc$grp[i], vc$var1[i], vc$sdcor[i]))
if ({is_nb}) cat(sprintf("NBTHETA\t%.15g\n", getME(fit, "glmer.nb.theta")))
status <- readLines("/proc/self/status")
hwm <- as.numeric(gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE)))
msgs <- paste(c(fit@optinfo$conv$lme4$messages, fit@optinfo$warnings), collapse = "; ")
msgs <- gsub("[\t\n]", " ", msgs)
cat(sprintf("RESULT\t%.15g\t%.0f\t%s\n", as.numeric(logLik(fit)), hwm, msgs))
cat(sprintf("VERSION\t%s\t%s\n", R.version.string, as.character(packageVersion("lme4"))))
"""


def _fit_call(model: GlmmModel) -> str:
    if model.family == "negative-binomial":
        return "glmer.nb(f, data = data)"
    family = R_FAMILIES[model.family]
    return f"glmer(f, data = data, family = {family}, nAGQ = {model.nagq})"


def _enough(model: GlmmModel, quick: bool) -> str:
    """The R condition that ends the timed fits: worker.py's rule."""
    if model.synthetic is not None:
        return "length(times) >= 1"
    if quick:
        return f"length(times) >= {QUICK_REPEATS}"
    return (
        f"length(times) >= {SMALL_MIN_REPEATS} && (length(times) >= {SMALL_MAX_REPEATS} "
        f"|| sum(times) >= {SMALL_BUDGET_S})"
    )


def run_live(
    model: GlmmModel,
    quick: bool,
    fit_timeout: float,
    setup_timeout: float,
    memory_cap_mb: float,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    """Time lme4 on ``model`` in an R process of its own, under both caps.

    Returns the row (``status``, ``times_s``, ``median_s``, ``loglik`` on the full scale,
    ``loglik_reported``, ``peak_rss_mb``, ``estimates``, ``messages``) and the R/lme4
    version string ("" when R was stopped before printing it).
    """
    frame = glmm_models.load_frame(model)
    with tempfile.TemporaryDirectory(prefix="mm-bench-r-") as tmp:
        csv = Path(tmp) / "data.csv"
        frame.to_csv(csv, index=False)
        warm_csv = csv
        if model.synthetic is not None:  # the warm-up fits the 1% version
            warm_csv = Path(tmp) / "warm.csv"
            glmm_models.load_frame(model, scale=0.01).to_csv(warm_csv, index=False)
        script = Path(tmp) / "glmm.R"
        script.write_text(
            _R_TEMPLATE.format(
                factors=", ".join(f'"{c}"' for c in model.factors),
                formula=model.r_formula,
                fit_call=_fit_call(model),
                warm_csv=warm_csv,
                csv=csv,
                started=supervise.FIT_STARTED,
                enough=_enough(model, quick),
                is_nb="TRUE" if model.family == "negative-binomial" else "FALSE",
            ),
            encoding="utf-8",
        )
        out = supervise.run_supervised(
            ["Rscript", str(script)],
            env,
            fit_timeout=fit_timeout,
            setup_timeout=setup_timeout,
            memory_cap_mb=memory_cap_mb,
        )
    row: dict[str, Any] = {
        "model": model.key,
        "contestant": "lme4",
        "n": len(frame),
        "source": "Rscript (live)",
        "sampled_peak_rss_mb": out.peak_rss_mb,
    }
    version = ""
    times: list[float] = []
    estimates: dict[str, Any] = {"fixef": {}, "sd": {}}
    for line in out.stdout:
        parts = line.split("\t")
        if parts[0] == "TIME" and len(parts) == 2:
            times.append(float(parts[1]))
        elif parts[0] == "FIXEF" and len(parts) == 3:
            estimates["fixef"][parts[1]] = float(parts[2])
        elif parts[0] == "SD" and len(parts) == 3:
            estimates["sd"][parts[1]] = float(parts[2])
        elif parts[0] == "NBTHETA" and len(parts) == 2:
            estimates["nb_theta"] = float(parts[1])
        elif parts[0] == "RESULT" and len(parts) == 4:
            reported = float(parts[1])
            # lme4's AGQ logLik leaves out the saturated log-likelihood; add it back.
            full = reported
            if model.nagq > 1:
                full += glmm_models.saturated_loglik(model, frame)
            row.update(
                status="ok",
                loglik=full,
                loglik_reported=reported,
                criterion=-2.0 * full,
                peak_rss_mb=float(parts[2]) / 1024.0,
                messages=parts[3],
            )
        elif parts[0] == "VERSION" and len(parts) == 3:
            version = f"{parts[1]}, lme4 {parts[2]}"
    if times:
        row.update(
            times_s=times, median_s=statistics.median(times), min_s=min(times), repeats=len(times)
        )
    row["estimates"] = estimates
    if out.status != "exited":
        row.update(status="stopped", reason=out.reason)
        row.pop("median_s", None)
    elif "loglik" not in row or not times:
        row.update(status="failed", reason="Rscript " + out.crash_reason())
    brief = f"{row['median_s']:.4g} s" if row["status"] == "ok" else row["reason"]
    print(f"  {'lme4':12s} {model.key:22s} {brief}", file=sys.stderr, flush=True)
    return row, version


def from_reference(model: GlmmModel) -> dict[str, Any] | None:
    """The lme4 row from the reference file: the default fit's median time and logLik."""
    ref = glmm_models.reference(model)
    # The nAGQ = 0 files of tests/reference/glmm_nagq0 hold the tight fit only (no
    # timing, no default-control fit): no lme4 row from them (the caller marks it skipped).
    if ref is None or "timing" not in ref:
        return None
    timing = ref["timing"]
    default = ref.get("optimizer_check", {}).get("fits", {}).get("default")
    # Without a recorded default fit, the tight fit's logLik stands in for it.
    reported = float(default["logLik"] if default is not None else ref["logLik"])
    full = reported
    if model.nagq > 1:
        full += float(ref["logLik_agq_offset"])
    return {
        "model": model.key,
        "contestant": "lme4",
        "status": "ok",
        "n": ref.get("n") or ref.get("nobs"),
        "source": f"tests/reference/glmm/{model.reference}.json",
        "times_s": list(timing["all_s"]),
        "median_s": float(timing["median_s"]),
        "repeats": int(timing["reps"]),
        "loglik": full,
        "loglik_reported": reported,
        "criterion": -2.0 * full,
        "measured": timing.get("measured", ""),
    }
