"""Benchmark: score N synthetic enterprises with the zhejiang_default scheme.

Usage: .venv/bin/python bench/bench_scoring.py [N] [--explain]

Prints wall time and memory: the process's peak RSS (resource.getrusage) and the peak of
Python/numpy allocations during evaluate() (tracemalloc, measured in a second run because
tracing slows allocation down). ``--explain`` also builds the per-row explanation dicts.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import pandas as pd

from scoring import evaluate, load_scheme, run_fingerprint


def synthetic(n: int, seed: int = 20240101) -> pd.DataFrame:
    """A county-like population: 80 % 规上, skewed yields, ~5 % missing figures, a few flags."""
    rng = np.random.default_rng(seed)
    land = rng.lognormal(3.0, 0.8, n)  # 亩, median ≈ 20
    def skewed(scale):
        return rng.lognormal(np.log(scale), 1.0, n)
    def holes(x, share=0.05):
        return np.where(rng.random(n) < share, np.nan, x)
    flags = np.where(rng.random(n) < 0.02, "免评", np.where(rng.random(n) < 0.02, "过渡期、专精特新", None))
    return pd.DataFrame({
        "subject_id": np.char.add("91330000", np.char.zfill(np.arange(n).astype(str), 10)),
        "industry_code": rng.integers(13, 43, n).astype(str),
        "scale": np.where(rng.random(n) < 0.8, "规上", "规下"),
        "flags": pd.array(flags, dtype="str"),
        "founded": pd.to_datetime("2000-01-01") + pd.to_timedelta(rng.integers(0, 9000, n), unit="D"),
        "land_area_mu": land,
        "tax_paid": skewed(20) * land / 20,
        "tax_refund": holes(skewed(2), 0.5),
        "value_added": skewed(120) * land / 20,
        "revenue": skewed(600) * land / 20,
        "output_value": skewed(700) * land / 20,
        "energy_tce": holes(skewed(400)),
        "emission_t": holes(skewed(0.5)),
        "rd_expense": holes(skewed(15)),
        "employees": np.maximum(1, rng.poisson(60, n)),
        "electricity_kwh": holes(skewed(2e6)),
    })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--explain", action="store_true", help="also build the explanation dicts")
    args = ap.parse_args()
    scheme = load_scheme("zhejiang_default")
    t0 = time.perf_counter()
    subjects = synthetic(args.n)
    t_gen = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    out = evaluate(subjects, scheme, 2024, explain=args.explain)
    t_eval = time.perf_counter() - t0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    fp = run_fingerprint(subjects, scheme, 2024)
    t_fp = time.perf_counter() - t0

    tracemalloc.start()
    evaluate(subjects, scheme, 2024, explain=args.explain)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    ev = out["evaluated"]
    print(f"subjects            {args.n:,} (input {subjects.memory_usage(deep=True).sum() / 2**20:,.0f} MiB, "
          f"generated in {t_gen:.1f} s)")
    print(f"evaluated           {int(ev.sum()):,}  (excluded {int((~ev).sum()):,}); "
          f"grades {out['grade'].value_counts().sort_index().to_dict()}")
    print(f"evaluate()          {t_eval:.2f} s  (explain={args.explain})")
    print(f"run_fingerprint()   {t_fp:.2f} s  {fp[:16]}…")
    print(f"peak RSS            {rss_after:,.0f} MiB (before evaluate: {rss_before:,.0f} MiB)")
    print(f"tracemalloc peak    {peak / 2**20:,.0f} MiB during evaluate()")


if __name__ == "__main__":
    main()
