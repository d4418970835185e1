"""The README's two opening commands, read from the README itself (used by .ci/run and tests).

    python3 tests/readme_commands.py main|test
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands(text: str | None = None) -> list[str]:
    text = README.read_text(encoding="utf-8") if text is None else text
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)][:2]


if __name__ == "__main__":
    main_cmd, test_cmd = readme_commands()
    print({"main": main_cmd, "test": test_cmd}[sys.argv[1]])
