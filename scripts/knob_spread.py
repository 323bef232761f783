"""Spread of the cheap knobs over random CA seeds: min, max and fraction at each range end.

    python scripts/knob_spread.py [--seeds 1000] [--seed 0]   # JSON, last line one object
    python scripts/knob_spread.py --calibrate                 # prints coral/search/knobs.py's table

A knob "at an end" equals its range's low or high (ints: after rounding). The required
property (tests/test_ca_knobs.py): span >= 80% of the range, <= 20% of seeds at either end.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from coral.search.ca import features_many
from coral.config import CAConfig, KnobRanges
from coral.search.genome import random_ca
from coral.search.knobs import KNOBS, calibration_table, knobs_from_features


def spread(n: int, seed: int, cfg: CAConfig = CAConfig(),
           ranges: KnobRanges = KnobRanges()) -> dict:
    """Per knob: min, max, span fraction and fractions at the low and high ends."""
    rng = np.random.default_rng(seed)
    knobs = [knobs_from_features(f, ranges)
             for f in features_many([random_ca(cfg, rng) for _ in range(n)])]
    out = {}
    for name in KNOBS:
        values = np.array([getattr(k, name) for k in knobs], dtype=float)
        r = getattr(ranges, name)
        width = r.high - r.low
        out[name] = {
            "low": r.low, "high": r.high,
            "min": round(float(values.min()), 4), "max": round(float(values.max()), 4),
            "span_fraction": round(float((values.max() - values.min()) / width), 4)
            if width else 1.0,
            "at_low": round(float(np.mean(values == r.low)), 4),
            "at_high": round(float(np.mean(values == r.high)), 4),
            "median": round(float(np.median(values)), 4),
        }
    return out


def main() -> None:
    """Print the spread report (or the calibration table with --calibrate)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    if args.calibrate:
        print("_CALIBRATION: dict[str, tuple[float, ...]] = {")
        for knob, qs in calibration_table().items():
            body = ", ".join(f"{q:.6f}" for q in qs)
            print(f'    "{knob}": ({body}),')
        print("}")
        return
    start = time.perf_counter()
    report = spread(args.seeds, args.seed)
    print(json.dumps({"seeds": args.seeds, "seed": args.seed, "knobs": report,
                      "seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main()
