"""Write the README's settings table from the declarations (sahayak_rpc/config.py, settings.py).

    python scripts/settings_table.py          rewrite README.md between the settings markers
    python scripts/settings_table.py --check  exit 1 when README.md is out of date

tests/unit/test_config.py runs the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sahayak_rpc.config import settings_table  # noqa: E402

BEGIN = "<!-- settings table: made by scripts/settings_table.py from the declarations; do not edit -->\n"
END = "<!-- end of settings table -->\n"


def updated(readme: str) -> str:
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit("README.md lacks the settings table markers")
    return head + BEGIN + "\n" + settings_table() + "\n" + END + tail


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    new = updated(text)
    if "--check" in argv:
        if new != text:
            print("README.md's settings table is out of date: run python scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
