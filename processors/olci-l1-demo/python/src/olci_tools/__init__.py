"""olci-l1: calibrate Level-0 counts of an OLCI band to Level-1 radiance.

The gain and offset of each band come from the vendor's table (the olci-lut COTS, found through
OLCI_LUT_DIR); the arithmetic is done by the compiled olci-calibrate named in the configuration.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

__version__ = "1.2.0"


def _band(lut_dir: Path, band: str) -> tuple[str, str]:
    with (lut_dir / "gains.csv").open(newline="", encoding="utf-8") as table:
        for row in csv.DictReader(table):
            if row["band"] == band:
                return row["gain"], row["offset"]
    raise SystemExit(f"olci-l1: band {band} is not in {lut_dir / 'gains.csv'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="olci-l1", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"olci-l1 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    calibrate = commands.add_parser("calibrate", help="print the radiance of each count")
    calibrate.add_argument("--band", help="band name such as Oa01 (default: the configuration's)")
    calibrate.add_argument("counts", nargs="+")
    args = parser.parse_args(argv)

    with open(os.environ["OLCI_CONF"], "rb") as conf_file:
        conf = tomllib.load(conf_file)
    band = args.band or conf["default_band"]
    gain, offset = _band(Path(os.environ["OLCI_LUT_DIR"]), band)
    result = subprocess.run(
        [conf["calibrator"], gain, offset, *args.counts], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        return result.returncode
    for counts, radiance in zip(args.counts, result.stdout.split(), strict=True):
        print(f"{band} {counts} -> {radiance}")
    return 0
