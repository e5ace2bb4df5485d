"""cdr-regrid: regrids a climate data record field with cdo (the COTS bundle) and checks, in Python,
that the area-weighted global mean of the result is the one cdo computes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from importlib.metadata import version

import numpy as np

from cdr_regrid.netcdf3 import open_dataset

__version__ = "1.0.0"


def _unit(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon, lat = np.deg2rad(lon), np.deg2rad(lat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def _triangle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The area of spherical triangles on the unit sphere (Van Oosterom and Strackee)."""
    dot = lambda u, v: np.einsum("...i,...i", u, v)  # noqa: E731
    return 2 * np.arctan2(np.abs(dot(a, np.cross(b, c))), 1 + dot(a, b) + dot(b, c) + dot(c, a))


def cell_areas(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Cell areas of a regular lon/lat grid as cdo's gridarea has them: quadrilaterals whose edges
    are great circles, corners midway between centres (the poles at the ends)."""
    lat_edges = np.concatenate(([np.sign(lat[0]) * 90], (lat[1:] + lat[:-1]) / 2, [np.sign(lat[-1]) * 90]))
    half = (lon[1] - lon[0]) / 2
    centre, row = np.meshgrid(lon, np.arange(len(lat)))
    south, north = lat_edges[row], lat_edges[row + 1]
    sw, se, ne, nw = (
        _unit(centre + dx, y) for dx, y in ((-half, south), (half, south), (half, north), (-half, north))
    )
    return _triangle(sw, se, ne) + _triangle(sw, ne, nw)


def global_mean(path: str, variable: str) -> tuple[float, int]:
    """The area-weighted mean of a (time, lat, lon) field over every valid cell, and their count."""
    dataset = open_dataset(path)
    values = dataset.read(variable)
    lat_name, lon_name = dataset.variables[variable].dimensions[-2:]
    weights = np.broadcast_to(cell_areas(dataset.read(lon_name), dataset.read(lat_name)), values.shape)
    valid = ~np.isnan(values)
    return float(np.sum(values[valid] * weights[valid]) / np.sum(weights[valid])), int(valid.sum())


def cdo(*args: str) -> str:
    """Run the bundled cdo quietly; its stdout, or exit with its own message."""
    done = subprocess.run(["cdo", "-s", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"cdr-regrid: cdo {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdr-regrid", description=__doc__)
    parser.add_argument(
        "--version", action="store_true", help="show the versions of cdr-regrid, numpy and cdo"
    )
    commands = parser.add_subparsers(dest="command")
    mean = commands.add_parser("mean", help="the area-weighted global mean of a NetCDF field, in Python")
    mean.add_argument("netcdf")
    run = commands.add_parser("run", help="regrid with cdo to the configured grid, then check the mean")
    run.add_argument("netcdf")
    run.add_argument("output")
    args = parser.parse_args(argv)

    if args.version:
        cdo_version = cdo("--version").splitlines()[0]
        print(f"cdr-regrid {__version__} (numpy {version('numpy')}, {cdo_version})")
        return 0
    if args.command is None:
        parser.error("give a command: mean or run")
    with open(os.environ["CDR_REGRID_CONF"], "rb") as conf_file:
        conf = tomllib.load(conf_file)
    if not os.path.isfile(args.netcdf):
        parser.error(f"no such file: {args.netcdf}")
    variable = conf["variable"]
    if args.command == "mean":
        value, cells = global_mean(args.netcdf, variable)
        print(f"{variable} global mean: {value:.4f} K ({cells} cells)")
        return 0

    cdo("-f", "nc", f"{conf['method']},{conf['target_grid']}", args.netcdf, args.output)
    before, _ = global_mean(args.netcdf, variable)
    after, cells = global_mean(args.output, variable)
    by_cdo = float(cdo("outputf,%.6f,1", "-fldmean", args.output))
    print(f"{conf['method']} to {conf['target_grid']}: {cells} cells in {args.output}")
    print(f"{variable} global mean: {before:.4f} K before, {after:.4f} K after (cdo fldmean {by_cdo:.4f} K)")
    if abs(after - by_cdo) > conf["tolerance_k"]:
        print(f"Python and cdo disagree by more than {conf['tolerance_k']} K", file=sys.stderr)
        return 1
    return 0
