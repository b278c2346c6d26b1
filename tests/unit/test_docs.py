"""The manual: the docs site builds strictly (a broken link, anchor or missing page fails), every page is
in its nav, and README is a front page whose links all lead somewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
#: README's commands, as .ci/run runs them
COMMANDS = (
    'pip install -e ".[test]"',
    "snakemake --cores 2 results/figure2.pdf",
    "python -m pytest",
    "python -m pytest -m slow",
)


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of the site whose mkdocs.yml is in root (run there: snippets resolve from it)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return [p for item in nav for p in _nav_pages(item)]


def _nav() -> list[str]:
    return _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])


def test_docs_site_builds_strictly(tmp_path):
    out = _build(REPO, tmp_path / "site")
    log = out.stdout + out.stderr
    assert out.returncode == 0, f"mkdocs build --strict failed (pip install -e '.[test]' installs mkdocs):\n{log}"
    assert not re.search(r"^(WARNING|ERROR)", log, re.M), log
    assert (tmp_path / "site" / "index.html").is_file()
    # the config's reference page carries config/README.md itself
    assert "Configuring the workflow" in (tmp_path / "site" / "config" / "index.html").read_text()
    # a list written straight after a paragraph line renders as text on the site (not on GitHub)
    for page in (tmp_path / "site").rglob("*.html"):
        paragraphs = re.findall(r"<p>(.*?)</p>", page.read_text(), re.S)
        assert not [p for p in paragraphs if re.search(r"^- ", p, re.M)], f"{page}: a list needs a blank line before it"


def test_a_broken_anchor_or_link_fails_the_build(tmp_path):
    for name in ("mkdocs.yml", "docs", "config/README.md"):
        src, dst = REPO / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    page = tmp_path / "docs" / "testing.md"
    text = page.read_text()
    page.write_text(text + "\nSee [the contract](deploying.md#no-such-section).\n")
    out = _build(tmp_path, tmp_path / "site")
    assert out.returncode != 0 and "no-such-section" in out.stdout + out.stderr
    page.write_text(text + "\nSee [the ledger](no-such-page.md).\n")
    out = _build(tmp_path, tmp_path / "site")
    assert out.returncode != 0 and "no-such-page.md" in out.stdout + out.stderr


def test_every_page_under_docs_is_in_the_nav():
    """Every page (images are the pages' assets, under docs/img/)."""
    files = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    assets = {p.relative_to(REPO / "docs").parts[0] for p in (REPO / "docs").rglob("*") if p.suffix != ".md"}
    assert assets <= {"img"}, f"files other than pages and docs/img/ images: {assets}"
    nav = _nav()
    assert len(nav) == len(set(nav)), f"a page is in the nav twice: {nav}"
    assert sorted(nav) == files


def test_readme_is_a_front_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for command in COMMANDS:
        assert command in readme, command
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links and all((REPO / link).is_file() for link in links), [x for x in links if not (REPO / x).is_file()]
    # where to read on: every page of the site (the config's reference by its own file)
    linked = {link.removeprefix("docs/") for link in links} | ({"config.md"} if "config/README.md" in links else set())
    assert set(_nav()) <= linked, set(_nav()) - linked
