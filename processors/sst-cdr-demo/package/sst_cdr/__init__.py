"""sst-cdr: sea surface temperature anomalies per region, against the configured climatology."""

from __future__ import annotations

import argparse
import csv
import os
import tomllib
from collections import defaultdict
from importlib.metadata import version

from tabulate import tabulate

__version__ = "0.4.0"


def anomalies(path: str, climatology: dict[str, float]) -> dict[str, list[float]]:
    """Each region's daily anomalies (K) of the CSV `region,date,sst_k`."""
    found: dict[str, list[float]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as table:
        for row in csv.DictReader(table):
            found[row["region"]].append(float(row["sst_k"]) - climatology[row["region"]])
    return dict(sorted(found.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sst-cdr", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"sst-cdr {__version__} (tabulate {version('tabulate')})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    anomaly = commands.add_parser("anomaly", help="print the mean anomaly of each region")
    anomaly.add_argument("csv", help="daily SST observations: region,date,sst_k")
    args = parser.parse_args(argv)

    with open(os.environ["SST_CDR_CONF"], "rb") as conf_file:
        climatology = tomllib.load(conf_file)["climatology"]
    per_region = anomalies(args.csv, climatology)
    rows = [(region, len(values), sum(values) / len(values)) for region, values in per_region.items()]
    print(tabulate(rows, headers=["region", "days", "mean anomaly (K)"], floatfmt="+.2f"))
    everything = [value for values in per_region.values() for value in values]
    print(f"overall mean anomaly: {sum(everything) / len(everything):+.2f} K")
    return 0
