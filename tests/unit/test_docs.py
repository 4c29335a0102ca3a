"""The docs stay true: the paths they name exist, their links resolve, every `qed`
command they show parses (`--print_config`), and the modules the architecture page
names import."""
import importlib
import re
import shlex
from pathlib import Path

import pytest

from qed_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE = ROOT / "src" / "qed_lightning"

# Paths the docs name on purpose although they are not in the repository.
NOT_SHIPPED = {"configs/my_rl.yaml": "stands for the user's own config in an sbatch example"}
# Commands the docs show that cannot parse here, with the reason.
UNPARSED: dict[str, str] = {}

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CONFIG_PATH = re.compile(r"(?<![\w/.-])(?:\.\./)?(?:configs|callbacks)/[\w./-]+\.yaml\b")
# A backticked repository path: a top-level folder, then a file.
REPO_FILE = re.compile(r"`((?:\.\./)?(?:bench|slurm|tests|notebooks|callbacks|configs|src|\.ci)/[\w./-]+)`")
# A backticked path inside the package, e.g. `engines/kv_waves.py`.
PACKAGE_FILE = re.compile(r"`([a-z_]+/[\w/]+\.py)`")
MODULE = re.compile(r"\bqed_lightning(?:\.\w+)+")
PLACEHOLDER = re.compile(r"<[^<>\n]+>")
QED_COMMANDS = ("fit", "eval", "data", "judge")


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _prose(text: str) -> str:
    """The page without its fenced blocks (links and backticked paths live in prose)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", _prose(page.read_text()), re.M)}


def test_the_docs_are_there():
    names = {p.name for p in PAGES}
    assert {"README.md", "install.md", "architecture.md", "configuration.md", "troubleshooting.md"} <= names
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250  # a landing page, not the manual


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_named_config_paths_exist(page):
    named = {m.removeprefix("../") for m in CONFIG_PATH.findall(page.read_text())}
    missing = sorted(p for p in named - NOT_SHIPPED.keys() if not (ROOT / p).is_file())
    assert not missing, f"{_rel(page)} names configs that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_named_repository_files_exist(page):
    prose = _prose(page.read_text())
    named = {m.removeprefix("../").rstrip(".") for m in REPO_FILE.findall(prose)}
    missing = sorted(p for p in named - NOT_SHIPPED.keys() if "*" not in p and not (ROOT / p).exists())
    in_package = {m for m in PACKAGE_FILE.findall(prose) if (PACKAGE / m.split("/")[0]).is_dir()}
    missing += sorted(p for p in in_package if not (PACKAGE / p).is_file())
    assert not missing, f"{_rel(page)} names files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{_rel(page)} links to what does not exist: {broken}"


def _shell_commands(text: str):
    """(line number, command) of every line of a fenced bash block, `\\` continuations joined."""
    for block in FENCE.finditer(text):
        if block.group(1) not in ("bash", "sh", "shell"):
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        pending, start = "", first
        for offset, line in enumerate(block.group(2).splitlines()):
            if not pending:
                start = first + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""


def _qed_commands():
    """Every `qed fit|eval|data|judge ...` command of a fenced bash block, as
    (id, environment, arguments); placeholders such as `<path>` become a plain word."""
    found = []
    for page in PAGES:
        for line, command in _shell_commands(page.read_text()):
            words = shlex.split(PLACEHOLDER.sub("placeholder", command), comments=True)
            env = {}
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if len(words) >= 2 and words[0] == "qed" and words[1] in QED_COMMANDS:
                found.append(pytest.param(env, words[1:], id=f"{_rel(page)}:{line}"))
    return found


COMMANDS = _qed_commands()


def test_commands_are_found():
    """The extraction itself works: the stage commands of the landing page are among them."""
    ids = " ".join(p.id for p in COMMANDS)
    assert len(COMMANDS) >= 20 and "README.md:" in ids and "docs/data.md:" in ids


@pytest.mark.parametrize("env,args", COMMANDS)
def test_shown_qed_commands_parse(env, args, request, monkeypatch, capsys):
    if request.node.callspec.id in UNPARSED:
        pytest.skip(UNPARSED[request.node.callspec.id])
    monkeypatch.chdir(ROOT)  # the docs' paths are relative to the repository root
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    assert captured.out.strip(), "--print_config printed nothing"


def _architecture_modules() -> list[str]:
    return sorted(set(MODULE.findall((ROOT / "docs" / "architecture.md").read_text())))


def test_architecture_names_the_rl_step_modules():
    names = _architecture_modules()
    assert len(names) >= 15 and "qed_lightning.rollouts.producer" in names


@pytest.mark.parametrize("name", _architecture_modules())
def test_architecture_modules_import(name):
    importlib.import_module(name)
