"""Renders bench/RESULTS.md's sections from the kept results (bench/results/KEY.json); measures nothing.

    python -m bench render              # every section that has a record
    python -m bench render driver pool  # those sections only

Each case that writes results keeps its run as bench/results/KEY.json (date, command, library commit,
machine, provisional note, and the body: text and tables with their cells) and renders that section
itself; this re-renders them all, e.g. after a change of the layout. Sections with no record
(hand-written notes, runs from before the records) are left as they are.
"""

from __future__ import annotations

from .._common import case_parser
from .._results import RESULTS, RESULTS_DIR, render_into_results


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, results=False)
    ap.add_argument("keys", nargs="*", help="sections to render (default: all that have a record)")
    args = ap.parse_args(argv)
    paths = [RESULTS_DIR / f"{key}.json" for key in args.keys] if args.keys else None
    missing = [str(p) for p in paths or [] if not p.exists()]
    if missing:
        ap.error(f"no record: {', '.join(missing)}")
    keys = render_into_results(paths)
    print(f"rendered {len(keys)} section(s) into {RESULTS}: {', '.join(keys) or 'none'}")
