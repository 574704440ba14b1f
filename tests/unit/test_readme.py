"""The README's threat model names, for each attacker, the tests that show it: each must exist,
so a renamed or removed test cannot leave the table pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def threat_model() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Threat model")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def named_tests(section: str) -> list[tuple[str, str | None]]:
    """(file, test) for every `tests/...py::name` and `::name` (the file before it) cited."""
    cited: list[tuple[str, str | None]] = []
    current: str | None = None
    for path, name, bare in re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", section):
        if path:
            current = path
        assert current is not None, f"`::{bare}` before any file"
        cited.append((current, name or bare or None))
    return cited


def test_the_threat_model_cites_tests() -> None:
    assert len(named_tests(threat_model())) >= 6  # one at least per attacker


def test_every_test_the_threat_model_cites_exists() -> None:
    missing = []
    for path, name in named_tests(threat_model()):
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name and not re.search(rf"^(async )?def {name}\(", file.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"the README's threat model cites tests that do not exist: {missing}"
