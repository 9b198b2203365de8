"""Command line: ``python -m roiops check`` runs the self-check (roiops/check.py)."""

import argparse
import sys

from . import check


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m roiops")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="compare every kernel variant against roiops.reference")
    c.add_argument("--problems", type=int, default=12, help="random problems per row")
    args = parser.parse_args()
    if args.command == "check":
        return check.main(args.problems)
    return 2


if __name__ == "__main__":
    sys.exit(main())
