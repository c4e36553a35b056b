#!/usr/bin/env python3
"""Measures a released table with pycanon (an independent implementation), as JSON.

    pycanon_check.py RELEASE.csv --qi age,country --sa rating --kind ordinal

prints {"k": …, "l": …, "t": …, "seconds": …}: k-anonymity, distinct l-diversity and
t-closeness of the classes of equal quasi-identifier values, and the time pycanon took for the
three (the CSV read excluded). Every column is read as text, with no value taken for missing
("NA" is a region, not a gap), so classes are exactly the rows' strings. pycanon measures t with
the ordered distance for a numeric column and the equal distance for a text one: an ordinal
sensitive attribute (--kind ordinal, its values numbers in their order) is made numeric, a
categorical one stays text. Suppressed rows must not be in the CSV (pycanon would make a class
of them).
"""

import argparse
import json
import time

import pandas as pd
from pycanon import anonymity


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("--qi", required=True, help="quasi-identifier columns, comma-separated")
    parser.add_argument("--sa", required=True, help="the sensitive column")
    parser.add_argument("--kind", choices=["categorical", "ordinal"], default="categorical")
    args = parser.parse_args()
    df = pd.read_csv(args.csv, dtype=str, keep_default_na=False, na_filter=False)
    if args.kind == "ordinal":
        df[args.sa] = pd.to_numeric(df[args.sa])
    qi = args.qi.split(",")
    start = time.perf_counter()
    k = anonymity.k_anonymity(df, qi)
    l_div = anonymity.l_diversity(df, qi, [args.sa])
    t = anonymity.t_closeness(df, qi, [args.sa])
    seconds = time.perf_counter() - start
    print(json.dumps({"k": int(k), "l": int(l_div), "t": float(t), "seconds": seconds}))


if __name__ == "__main__":
    main()
