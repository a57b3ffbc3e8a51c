"""`python -m bench CASE [options]`: run one benchmark case; `python -m bench` lists them."""

from __future__ import annotations

import sys

from . import cases


def usage() -> str:
    names = cases.names()
    width = max(map(len, names))
    lines = ["usage: python -m bench CASE [options]   (python -m bench CASE --help: its options)", "",
             "Run from the repository root. Cases:", ""]
    lines += [f"  {name.ljust(width)}  {cases.summary(name)}" for name in names]
    lines += ["", "Cases that write results replace their section of bench/RESULTS.md (--no-results: print "
              "only). See bench/README.md."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0].replace("-", "_")
    if name not in cases.names():
        print(f"python -m bench: no case {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    cases.load(name).main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
