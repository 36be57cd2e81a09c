"""The CI recipes in ci-examples/ (and the commands in docs/ci.md, docs/scale-out.md)
lint clean, parse, and name only things that exist: scripts, tox.ini, and harness
command lines that the real argument parser accepts."""

from __future__ import annotations

import configparser
import contextlib
import io
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from harness.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "ci-examples").glob("*.yml"))
GITHUB = [p for p in RECIPES if p.name.startswith("github-")]
GITLAB = [p for p in RECIPES if p.name.startswith("gitlab-")]
ACTIONLINT_CONFIG = ROOT / "ci-examples" / "actionlint.yaml"
DOCS = [ROOT / "docs" / "ci.md", ROOT / "docs" / "scale-out.md"]

SHELL_KEYS = ("run", "script", "before_script", "after_script")  # GitHub steps, GitLab jobs
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;"}
KEYWORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "time"}
REDIRECTS = {">", ">>", "<", ">&", "<&", "2>", "&>"}
# A shell variable in an argument stands for a value; these options need one of their choices.
PLACEHOLDER = "out/"
PLACEHOLDER_FOR_OPTION = {"--kernel": "source", "--accel": "auto", "--tolerance": "0.02", "--abs-tolerance": "0.02"}
PROJECT_PATH = re.compile(r"^(?:\./)?((?:scripts|\.ci)/[\w.-]+)$")


def test_recipes_exist():
    assert {p.name for p in RECIPES} >= {"github-actions.yml", "gitlab-ci.yml", "github-scale.yml",
                                         "gitlab-scale.yml", "gitlab-shard.yml"}
    assert set(GITHUB) | set(GITLAB) == set(RECIPES)


# ---------------------------------------------------------------- the engines' own linters
def tool(name: str) -> str:
    """A linter the dev extras install beside this Python (tox's venv)."""
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{name} is not installed beside {sys.executable}: pip install -e '.[dev]'"
    return str(path)


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("actionlint"), "-config-file", str(ACTIONLINT_CONFIG), "-no-color",
                           *map(str, paths)], capture_output=True, text=True, timeout=120)


def gitlab_schema(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_github_workflows_pass_actionlint():
    r = actionlint(*GITHUB)
    assert r.returncode == 0, f"actionlint:\n{r.stdout}{r.stderr}"


def test_gitlab_pipelines_pass_gitlabs_schema():
    r = gitlab_schema(*GITLAB)
    assert r.returncode == 0, f"check-jsonschema (GitLab CI schema):\n{r.stdout}{r.stderr}"


def test_the_linters_reject_a_broken_recipe(tmp_path):
    """The two checks above can fail: an undefined matrix key, a GitLab job without script."""
    gh = tmp_path / "bad.yml"
    gh.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                  "      - run: echo ${{ matrix.nope }}\n")
    assert actionlint(gh).returncode != 0
    gl = tmp_path / "bad-gitlab.yml"
    gl.write_text("job:\n  stage: test\n  scriptt: [true]\n")
    assert gitlab_schema(gl).returncode != 0


def test_a_generated_plan_is_a_valid_matrix_for_both_engines(tmp_path):
    """`harness plan --kernel source --kernel source-latest --shards 4`: GitHub's matrix
    in a workflow that uses it as the scale recipe does, and GitLab's child pipeline."""
    import json

    from harness.claims.runner import select
    from harness.scale.plan import Timings, github_matrix, gitlab_child_pipeline, make_plan

    plan = make_plan(["source", "source-latest"], select(None), 4, ("claims", "survey", "selftests"), Timings(),
                     artifact_dir="kernels")
    assert len(plan["jobs"]) == 2 * (4 + 2)
    matrix = github_matrix(plan)
    workflow = {"on": "push", "jobs": {"test": {"runs-on": "ubuntu-latest", "strategy": {"matrix": matrix},
                                                "steps": [{"run": "echo ${{ matrix.job }} ${{ matrix.kernel }} "
                                                                  "${{ matrix.command }}"}]}}}
    (tmp_path / "wf.yml").write_text(json.dumps(workflow))
    r = actionlint(tmp_path / "wf.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "child.yml").write_text(json.dumps(gitlab_child_pipeline(plan)))
    r = gitlab_schema(tmp_path / "child.yml")
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- YAML
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_yamllint_clean(path):
    conf = YamlLintConfig(file=str(ROOT / ".yamllint"))
    problems = list(linter.run(path.read_text(), conf, str(path)))
    errors = [f"{path.name}:{p.line}:{p.column} {p.rule}: {p.desc}" for p in problems if p.level == "error"]
    assert not errors, "yamllint errors:\n" + "\n".join(errors)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path):
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict) and doc


# ---------------------------------------------------------------- shell extraction
def shell_texts(node: object) -> list[str]:
    """Every string under a run/script/before_script/after_script key, anywhere in the YAML."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SHELL_KEYS and isinstance(value, str):
                found.append(value)
            elif key in SHELL_KEYS and isinstance(value, list):
                found += [v for v in value if isinstance(v, str)]
            else:  # also GitHub's `defaults: run: {shell: bash}`, which is no shell text
                found += shell_texts(value)
    elif isinstance(node, list):
        for item in node:
            found += shell_texts(item)
    return found


def markdown_code(text: str) -> list[str]:
    """The bodies of the fenced code blocks of a Markdown file."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)


def commands(text: str) -> list[list[str]]:
    """Simple commands of a shell text: continuation lines joined, comments dropped, split at
    ; && || | & ( ), leading keywords (if, then, ...) and trailing redirections removed.
    GitHub `${{ ... }}` expressions count as shell variables."""
    text = re.sub(r"\$\{\{.*?\}\}", "$GH_EXPR", text.replace("\\\n", " "))
    out: list[list[str]] = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: not a command line (e.g. YAML prose)
            continue
        cmd: list[str] = []
        for tok in [*tokens, ";"]:
            if tok in SEPARATORS:
                while cmd and cmd[0] in KEYWORDS:
                    cmd.pop(0)
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(tok)
    return [_strip_redirections(c) for c in out]


def _strip_redirections(cmd: list[str]) -> list[str]:
    for i, tok in enumerate(cmd):
        if tok in REDIRECTS or (tok.isdigit() and i + 1 < len(cmd) and cmd[i + 1] in REDIRECTS):
            return cmd[:i]
    return cmd


def program_argvs(cmds: list[list[str]], program: str) -> list[list[str]]:
    """The arguments of each `.venv/bin/PROGRAM ...`, wherever it stands in the command (so a
    YAML line like `- run: .venv/bin/harness ...` inside a Markdown block counts too)."""
    argvs = []
    for cmd in cmds:
        for i, tok in enumerate(cmd):
            if tok.endswith(f"bin/{program}"):
                argvs.append(cmd[i + 1:])
                break
    return argvs


def harness_argvs(cmds: list[list[str]]) -> list[list[str]]:
    return program_argvs(cmds, "harness")


def with_placeholders(argv: list[str]) -> list[str]:
    """Each argument holding a shell variable becomes a value the parser accepts: a path,
    or for an option with choices one of them."""
    out = []
    for i, arg in enumerate(argv):
        option = argv[i - 1] if i else ""
        out.append(PLACEHOLDER_FOR_OPTION.get(option, PLACEHOLDER) if "$" in arg else arg)
    return out


def parse_error(argv: list[str]) -> str | None:
    """None if the harness CLI accepts argv, else argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit as e:
        return stderr.getvalue().strip() or f"exit {e.code}"
    return None


def sources() -> list[tuple[str, list[list[str]]]]:
    """(file name, its commands) for every recipe and doc."""
    found = [(p.name, [c for t in shell_texts(yaml.safe_load(p.read_text())) for c in commands(t)])
             for p in RECIPES]
    found += [(f"docs/{p.name}", [c for block in markdown_code(p.read_text()) for c in commands(block)])
              for p in DOCS if p.is_file()]
    return found


def invocations() -> list[tuple[str, list[str]]]:
    """(file name, argv) of every harness command line, each distinct one once."""
    found = dict.fromkeys((name, tuple(argv)) for name, cmds in sources() for argv in harness_argvs(cmds))
    return [(name, list(argv)) for name, argv in found]


# ---------------------------------------------------------------- the extraction itself
SNIPPET = """\
steps:
  - run: scripts/bootstrap-host.sh && .venv/bin/tox
  - run: |
      rc=0
      if [ -d "$PREV" ]; then
        .venv/bin/harness run --baseline "$PREV" --out out/ || rc=$?   # a comment
      else
        .venv/bin/harness run \\
          --claims page-reuse,xdp --out out/ 2>&1 | tee run.log
      fi
  - run: .venv/bin/harness frobnicate --out out/
"""


def test_extraction_finds_every_invocation_and_a_made_up_subcommand_fails():
    cmds = [c for t in shell_texts(yaml.safe_load(SNIPPET)) for c in commands(t)]
    assert ["scripts/bootstrap-host.sh"] in cmds and [".venv/bin/tox"] in cmds
    assert missing_scripts(cmds) == []
    assert missing_scripts(commands("./scripts/no-such.sh && .ci/run")) == ["./scripts/no-such.sh"]
    argvs = harness_argvs(cmds)
    assert argvs == [["run", "--baseline", "$PREV", "--out", "out/"],
                     ["run", "--claims", "page-reuse,xdp", "--out", "out/"],
                     ["frobnicate", "--out", "out/"]]
    assert with_placeholders(argvs[0]) == ["run", "--baseline", "out/", "--out", "out/"]
    assert parse_error(argvs[1]) is None
    assert "invalid choice: 'frobnicate'" in parse_error(argvs[2])
    assert "unrecognized arguments: --frobnicate" in parse_error(["run", "--frobnicate", "--out", "out/"])


def test_github_expressions_are_variables():
    line = "- run: .venv/bin/harness run --kernel ${{ matrix.kernel }} --out out/${{ matrix.kernel }}"
    (argv,) = harness_argvs(commands(line))
    assert with_placeholders(argv) == ["run", "--kernel", "source", "--out", "out/"]


# ---------------------------------------------------------------- the recipes' commands
def test_every_recipe_runs_the_harness_and_the_test_suite():
    """A nightly runs the test suite; a scale-out recipe's shards are the test (its jobs run
    `harness shard`) and a shard template is one job of such a pipeline."""
    for name, cmds in sources():
        if not name.startswith("docs/"):
            argvs = harness_argvs(cmds)
            assert argvs, f"{name}: no .venv/bin/harness invocation found"
            sharded = any(a[:1] in (["shard"], ["plan"]) for a in argvs)
            assert sharded or program_argvs(cmds, "tox"), f"{name}: no tox invocation found"


INVOCATIONS = [pytest.param(name, argv, id=f"{name}: harness {' '.join(argv)}") for name, argv in invocations()]


@pytest.mark.parametrize(("name", "argv"), INVOCATIONS)
def test_harness_invocation_parses(name, argv):
    error = parse_error(with_placeholders(argv))
    assert error is None, f"{name}: `harness {shlex.join(argv)}` does not parse:\n{error}"


def missing_scripts(cmds: list[list[str]]) -> list[str]:
    """Arguments naming scripts/... or .ci/... that are not files of the repository."""
    return [tok for c in cmds for tok in c if (m := PROJECT_PATH.match(tok)) and not (ROOT / m.group(1)).is_file()]


def test_project_scripts_exist():
    missing = [f"{name}: {tok}" for name, cmds in sources() for tok in missing_scripts(cmds)]
    assert not missing, "recipes name scripts that do not exist:\n" + "\n".join(missing)


def test_tox_invocations_match_tox_ini():
    ini = configparser.ConfigParser()
    assert ini.read(ROOT / "tox.ini"), "tox.ini is missing"
    envs = set(ini["tox"]["envlist"].replace(",", " ").split())
    envs |= {s.split(":", 1)[1] for s in ini.sections() if s.startswith("testenv:")}
    for name, cmds in sources():
        for argv in program_argvs(cmds, "tox"):
            args = argv[:argv.index("--")] if "--" in argv else argv
            for flag, value in itertools.pairwise(args):
                if flag == "-e":
                    assert set(value.split(",")) <= envs, f"{name}: tox -e {value}: tox.ini has {sorted(envs)}"
