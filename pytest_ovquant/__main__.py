"""``python -m pytest_ovquant <command>``: command-line tools next to the plugin."""

from __future__ import annotations

import sys

COMMANDS = ("merge",)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m pytest_ovquant {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    from . import merge

    return merge.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
