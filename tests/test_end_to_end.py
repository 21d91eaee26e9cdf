"""Walking skeleton: train a few steps -> load -> index -> query -> ranked results; eval's JSON."""

import ast
import json
import subprocess
import sys

import numpy as np
import pytest

from app.search import search_text
from embedding import load_encoder
from indexer import Library, index_folders
from tests.conftest import REPO, run_module


def test_train_index_query(tiny_run, photo_folder, tmp_path):
    encoder = load_encoder(str(tiny_run))
    assert encoder.dim == 192
    config = json.loads((tiny_run / "train_config.json").read_text())
    assert (config["steps"], config["chunk"], config["loss"]) == (6, 8, "sigmoid")  # the CLI's options landed

    library = Library(tmp_path / "library")
    summary = index_folders(library, encoder, [photo_folder], progress=False)
    assert summary.indexed == 48 and not summary.failed

    results = search_text(library, encoder, "Zwei Hunde spielen im Schnee", k=10)
    assert len(results) == 10
    assert all(r.path.startswith(str(photo_folder)) for r in results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    probabilities = [r.probability for r in results]
    assert probabilities == sorted(probabilities, reverse=True) and all(0 < p < 1 for p in probabilities)
    # The same query through a reloaded checkpoint ranks identically.
    again = search_text(library, load_encoder(str(tiny_run)), "Zwei Hunde spielen im Schnee", k=10)
    assert [r.path for r in again] == [r.path for r in results]
    with pytest.raises(ValueError, match="nothing to search for"):  # an empty query is refused in words
        search_text(library, encoder, "   ", k=10)


def test_softmax_baseline_trains_without_a_bias(flickr, small_captions, tmp_path):
    run_module("train", "--captions", str(small_captions), "--images", str(flickr / "images"), "--out",
               str(tmp_path / "clip"), "--steps", "3", "--batch-size", "16", "--vocab-size", "400", "--loss", "softmax",
               "--languages", "en,de")
    encoder = load_encoder(str(tmp_path / "clip"))
    assert encoder.bias == 0.0 and encoder.model.logit_bias is None
    assert encoder.temperature == pytest.approx(1 / 0.07, rel=1e-2)
    assert encoder.embed_texts(["Ein Hund"]).shape == (1, 192)


def test_eval_xm3600_writes_recall_per_language(tiny_run, small_captions, flickr, tmp_path):
    out = tmp_path / "recall.json"
    done = run_module("eval", "xm3600", "--captions", str(small_captions), "--images", str(flickr / "images"),
                      "--model", str(tiny_run), "--json", str(out))
    result = json.loads(out.read_text())
    assert sorted(result["languages"]) == ["cs", "de", "en", "fr", "zh"]
    keys = ["t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10"]
    for row in [*result["languages"].values(), result["mean"]]:
        assert list(row) == keys and all(0 <= row[k] <= 100 for k in keys)
        assert row["t2i_r1"] <= row["t2i_r5"] <= row["t2i_r10"]
    assert result["counts"]["en"] == {"captions": 240, "images": 48}
    assert np.isclose(result["mean"]["t2i_r5"], np.mean([r["t2i_r5"] for r in result["languages"].values()]))
    assert "mean" in done.stdout and "zh" in done.stdout


def test_eval_reports_missing_images_clearly(small_captions, tmp_path, checkpoint):
    done = run_module("eval", "xm3600", "--captions", str(small_captions), "--images", str(tmp_path),
                      "--model", str(checkpoint[0]), check=False)
    assert done.returncode == 2 and "48 images" in done.stderr and "missing" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_stage_explains_itself():
    for module in ("train", "indexer", "app", "eval"):
        done = run_module(module, "--help")
        assert "usage: python -m " + module in done.stdout and len(done.stdout) > 300


@pytest.mark.parametrize("command", ["train", "train pack", "train shards", "train scenes", "train tokenizer",
                                     "train words", "indexer", "app", "app search", "eval", "eval xm3600",
                                     "eval zeroshot", "eval tags", "eval ann", "eval caption"])
def test_help_imports_only_what_the_options_need(command):
    """`--help` of every entry point and subcommand answers without importing torch, open_clip or timm (what
    made it take seconds): `-X importtime` lists every module a run imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", *command.split(), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "usage: python -m " + command in done.stdout
    assert len(imported) > 50 and not imported & {"torch", "open_clip", "timm"}


def test_common_is_the_ground_floor():
    """Every package may import common/; common/ imports none of them (common/cache.py once imported
    embedding for its Encoder while embedding imported common: the one arrow that ran back up)."""
    ours = {path.name for path in REPO.iterdir() if (path / "__init__.py").is_file()} - {"common"}
    for module in sorted((REPO / "common").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {name.split(".")[0] for name in names} & ours, f"{module.name} imports {names}"
    assert {"embedding", "indexer", "app", "train", "eval"} <= ours  # the check looks where the packages are


@pytest.mark.parametrize("command", [
    "train --captions MISSING --images . --out OUT --steps 1", "train --resume MISSING",
    "train shards --captions MISSING --images . --out OUT", "train tokenizer --captions MISSING --out OUT",
    "train data --tree MISSING --name x --out OUT", "train pack MISSING --out OUT",
    "eval xm3600 --captions MISSING --images .", "eval zeroshot --images MISSING", "eval tags --classes MISSING",
    "eval tags --source MISSING", "eval caption MISSING", "eval report MISSING", "indexer MISSING",
])
def test_a_missing_input_is_refused_before_torch_loads(command, tmp_path):
    """A mistyped input path once took the seconds of torch's import and the model's load to be refused."""
    argv = command.replace("MISSING", str(tmp_path / "missing")).replace("OUT", str(tmp_path / "out")).split()
    assert str(tmp_path / "missing") in _refused_before_torch(argv)


@pytest.mark.parametrize(("command", "said"), [
    ("eval zeroshot --images README.md", "README.md is not a folder"),
    ("train --captions . --images . --out OUT --steps 1", ". is not a file"),
    ("eval xm3600 --captions README.md --images README.md", "README.md is not a folder"),
])
def test_a_file_for_a_folder_or_a_folder_for_a_file_is_refused_before_torch_loads(command, said, tmp_path):
    """`eval zeroshot --images FILE` once said "[Errno 20] Not a directory" after the model had loaded."""
    assert said in _refused_before_torch(command.replace("OUT", str(tmp_path)).split())


@pytest.mark.parametrize("command", ["indexer . --batch-size 0", "indexer . --commit-every -5",
                                     "train --captions README.md --images . --out OUT --batch-size 0",
                                     "train --captions README.md --images . --out OUT --steps 0"])
def test_a_count_below_one_is_refused_before_torch_loads(command, tmp_path):
    """`python -m indexer --batch-size 0` once loaded the model, then failed with "range() arg 3 must not be zero"."""
    assert "a whole number of 1 or more" in _refused_before_torch(command.replace("OUT", str(tmp_path)).split())


def _refused_before_torch(argv: list[str]) -> str:
    """`python -m ARGV` in a process that reports its exit status and whether torch was imported: it must end
    with status 2 and without torch; the last line it said."""
    probe = ("import runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n"
             "    runpy.run_module(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as end:\n    print(end.code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], (done.stdout, done.stderr[-2000:])
    return done.stderr.strip().splitlines()[-1]
