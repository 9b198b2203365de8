"""Command line: ``python -m roiops check`` runs the self-check (roiops/check.py);
``python -m roiops`` alone prints the help, ``--version`` the versions."""

from __future__ import annotations

import argparse
import sys

import torch

from . import __version__, check


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m roiops",
        description="roiops: RoIPool, RoIWarp and RoIAlign for PyTorch.",
    )
    p.add_argument("--version", action="version", version=f"roiops {__version__} (torch {torch.__version__})")
    sub = p.add_subparsers(dest="command", metavar="command")
    c = sub.add_parser("check", help="compare every kernel variant against roiops.reference, with gradcheck")
    c.add_argument("--problems", type=int, default=12, help="random problems per row (default 12)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "check":
        return check.main(args.problems)
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
