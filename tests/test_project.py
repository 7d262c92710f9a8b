"""The project's promises about itself: the README's test command is the one CI runs, one source for the version,
links in the docs that resolve, and the CLI's exit codes."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

import lrptext
from lrptext.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
    if not (ROOT / ".ci" / "run").exists():
        pytest.skip("not a source checkout")
    commands = readme_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci, "the README's test command must appear verbatim in .ci/run"
    assert "pip install torch==2.13.0" in commands[0] and "pip install torch==2.13.0" in commands[1]


def test_the_version_has_one_source():
    """lrptext/_version.py is read by the build into the package metadata and into the compiled module."""
    from lrptext._version import __version__

    assert importlib.metadata.version("lrptext") == __version__
    assert lrptext.build_info()["version"] == __version__


def test_links_in_the_docs_resolve():
    """Every relative link of the README and docs/ names a file of the repository (and a heading, after '#')."""
    if not (ROOT / ".ci" / "run").exists():
        pytest.skip("not a source checkout")

    def headings(path: Path) -> set[str]:
        titles = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.MULTILINE)
        return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}

    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if link.startswith(("http://", "https://")):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists() or (anchor and anchor not in headings(target)):
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert not broken, broken


def test_cli_info_and_demo(capsys):
    assert main(["info"]) == 0
    assert '"blas"' in capsys.readouterr().out
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    sums = re.findall(r"sum (-?[\d.]+) vs logit (-?[\d.]+)", out)
    assert len(sums) == 3 and all(abs(float(a) - float(b)) < 1e-3 for a, b in sums)  # conservation, bias-free


def test_cli_usage_errors_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    assert main([]) == 2
