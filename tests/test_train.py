"""The trainer: SigLiT on pip-installed towers, exact resume, recipes, the tokenizer command."""

import json
import shutil
from dataclasses import fields

import numpy as np
import pytest
import sentencepiece as spm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from common.cache import image_keys
from common.captions import read_captions
from embedding import load_encoder
from tests.conftest import REPO, TEXTS, run_module, torchrun
from train.__main__ import _parser
from train.config import RUN_KINDS, FineTuned, FromScratch, OnBases, TrainConfig
from train.recipes import RECIPES, load_recipe
from train.shards import read_shards


def _curve(run_dir) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"], row["t"], row["b"]) for row in rows if "loss" in row]


SIGLIT = ["--image-base", "efficientnet-lite0", "--text-base", "e5-small", "--embed-dim", "64",
          "--context-length", "32", "--tb-lr", "0.05"]


def _train(flickr, captions, out, *extra) -> None:
    run_module("train", "--captions", str(captions), "--images", str(flickr / "images"), "--out", str(out),
               "--steps", "8", "--batch-size", "16", "--warmup-steps", "2", "--log-every", "1",
               "--checkpoint-every", "3", *extra)


@pytest.mark.parametrize("model", [["--vocab-size", "400", "--init-bias", "-3"], SIGLIT], ids=["scratch", "siglit"])
def test_a_resumed_run_continues_the_same_loss_curve(flickr, small_captions, tmp_path, model):
    """Stopped at step 5 and resumed, a run logs exactly the losses, t and b of the run that never stopped."""
    _train(flickr, small_captions, tmp_path / "straight", *model)
    first_b = _curve(tmp_path / "straight")[0][3]
    assert abs(first_b - (-3 if "--init-bias" in model else -10)) < 0.1  # b starts where it was told to
    _train(flickr, small_captions, tmp_path / "split", *model, "--stop-after", "5")
    assert (tmp_path / "split" / "resume.pt").is_file()
    refused = run_module("train", "--captions", str(small_captions), "--images", str(flickr / "images"),
                         "--out", str(tmp_path / "split"), "--steps", "8", *model, check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr  # never silently overwritten
    run_module("train", "--resume", str(tmp_path / "split"))
    assert _curve(tmp_path / "split") == _curve(tmp_path / "straight")
    assert len(_curve(tmp_path / "straight")) == 8
    assert not (tmp_path / "split" / "resume.pt").exists()


@pytest.mark.parametrize("model", [["--vocab-size", "400"], SIGLIT], ids=["scratch", "siglit"])
def test_two_processes_under_torchrun_take_the_steps_of_one(flickr, small_captions, tmp_path, model):
    """torchrun with 2 processes (gloo, the ring sigmoid loss, DDP) logs the loss, t and b of one process."""
    _train(flickr, small_captions, tmp_path / "one", *model, "--steps", "6")
    done = torchrun(2, "train", "--captions", str(small_captions), "--images", str(flickr / "images"),
                    "--out", str(tmp_path / "two"), "--steps", "6", "--batch-size", "16", "--warmup-steps", "2",
                    "--log-every", "1", *model)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _curve(tmp_path / "one"), _curve(tmp_path / "two")
    assert [row[0] for row in two] == list(range(1, 7))
    np.testing.assert_allclose(np.array(two)[:, 1:], np.array(one)[:, 1:], rtol=2e-4, atol=1e-4)
    assert one[-1][1] != one[0][1]  # the steps did change the model
    load_encoder(str(tmp_path / "two"))  # the lead process wrote a complete checkpoint


@pytest.mark.parametrize("source", ["open_clip_folder", "checkpoint"], ids=["published-format", "ours"])
def test_fine_tuning_an_open_clip_model_keeps_its_tokenizer_and_unclamped_t(flickr, small_captions, tmp_path,
                                                                            source, request):
    """--init: every weight trains; t stays above open_clip's clamp at 100; the result loads like its source."""
    original, _ = request.getfixturevalue(source)
    init = tmp_path / "init"
    shutil.copytree(original, init)
    weights = load_file(str(init / "open_clip_model.safetensors"))
    weights["logit_scale"] = torch.tensor(np.log(300.0), dtype=weights["logit_scale"].dtype)  # t = 300
    save_file(weights, str(init / "open_clip_model.safetensors"))
    out = tmp_path / "tuned"
    run_module("train", "--init", f"local-dir:{init}", "--captions", str(small_captions),
               "--images", str(flickr / "images"), "--out", str(out), "--steps", "3", "--batch-size", "8",
               "--warmup-steps", "1", "--log-every", "1", "--lr", "1e-4", "--tb-lr", "1e-3")
    tuned = load_file(str(out / "open_clip_model.safetensors"))
    assert set(tuned) == set(weights)
    changed = [name for name in weights if not torch.equal(tuned[name], weights[name])]
    assert any(name.startswith("visual.") for name in changed) and any(name.startswith("text.") for name in changed)
    assert float(tuned["logit_scale"].exp()) > 250  # trained, not clamped to 100
    assert sorted(p.name for p in init.iterdir()) == sorted(p.name for p in out.iterdir() if p.suffix != ".jsonl"
                                                            and p.name not in ("train_config.json", "training.png"))
    encoder = load_encoder(str(out))  # with the source's own tokenizer
    assert encoder.temperature > 250 and encoder.embed_texts(TEXTS).shape[0] == len(TEXTS)


def test_siglit_trains_the_heads_and_t_b_and_loads_everywhere(flickr, small_captions, tmp_path):
    """Both trunks locked: the checkpoint is the heads, t and b; eval and the encoder read it from the folder."""
    out = tmp_path / "siglit"
    _train(flickr, small_captions, out, *SIGLIT, "--val-captions", str(small_captions), "--eval-every", "4")
    saved = load_file(str(out / "trained.safetensors"))
    assert set(saved) == {"logit_scale", "logit_bias", "visual.head.proj.weight", "text.proj.weight"}
    curve = _curve(out)
    # b moved at its own learning rate: AdamW moves a parameter at most ~lr per step, so at --lr 1e-3
    # eight steps could not move it 0.05.
    assert abs(curve[-1][3] + 10.0) > 0.05
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [row for row in rows if "val" in row]
    assert [row["step"] for row in val] == [4, 8]
    assert set(val[-1]["val_languages"]) == {"en", "zh", "de", "fr", "cs"}
    with Image.open(out / "training.png") as plot:  # a drawn figure: decodes, and more than a blank page
        assert plot.format == "PNG" and min(plot.size) >= 300
        assert len(plot.convert("RGB").getcolors(1 << 20)) > 50

    encoder = load_encoder(str(out))
    vectors = encoder.embed_texts(TEXTS)
    assert vectors.shape == (5, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    result = run_module("eval", "xm3600", "--captions", str(small_captions), "--images", str(flickr / "images"),
                        "--model", str(out), "--json", str(tmp_path / "recall.json"))
    recall = json.loads((tmp_path / "recall.json").read_text())
    # The trainer's in-memory validation and eval's reading of the saved checkpoint agree.
    assert recall["mean"]["t2i_r5"] == pytest.approx(val[-1]["val"]["t2i_r5"], abs=1e-6), result.stdout


def test_partly_unlocked_text_tower_trains_its_top_layer(flickr, small_captions, tmp_path):
    out = tmp_path / "unlocked"
    _train(flickr, small_captions, out, *SIGLIT, "--text-unlocked", "1", "--steps", "2")
    saved = load_file(str(out / "trained.safetensors"))
    layers = {name.split(".")[4] for name in saved if name.startswith("text.transformer.encoder.layer.")}
    assert layers == {"11"}
    load_encoder(str(out))  # the trained top layer loads over the base


def test_recipes_are_complete_train_configs():
    assert "bundled" in RECIPES
    for name in RECIPES:
        recipe = load_recipe(name)
        TrainConfig.from_options(recipe).check()  # every key is a TrainConfig option, and the trainer takes the mix
    broken = {**load_recipe("heads"), "text_base": None}  # half a pretrained model: the check does run
    with pytest.raises(ValueError, match="both --image-base and --text-base"):
        TrainConfig.from_options(broken)


def test_the_parser_is_generated_from_the_kinds_of_run_and_each_kind_keeps_its_options(tmp_path):
    help_text = run_module("train", "--help").stdout
    for cls in (TrainConfig, *RUN_KINDS):
        for f in fields(cls):
            if f.name != "model":  # every option declared once, on its type, reaches the command line
                assert f.metadata.get("flag", "--" + f.name.replace("_", "-")) in help_text, f.name
    assert "--batch-size BATCH_SIZE" in help_text and "(default: 256)" in help_text
    kinds = {"scratch": ["--size", "tiny"], "bases": ["--image-base", "efficientnet-lite0", "--text-base", "e5-small",
                                                      "--embed-dim", "64"], "tuned": ["--init", "bundled"]}
    expected = {"scratch": FromScratch("tiny"), "bases": OnBases("efficientnet-lite0", "e5-small", embed_dim=64),
                "tuned": FineTuned("bundled")}
    for name, flags in kinds.items():
        config = TrainConfig.from_options(_parsed(flags))
        assert config.model == expected[name]
        assert TrainConfig.from_options(json.loads(json.dumps(config.options(), default=str))) == config  # resume
    shipped = json.loads((REPO / "models" / "bundled" / "train_config.json").read_text())  # written before kinds
    assert TrainConfig.from_options(shipped).model == OnBases("efficientnet-lite2", "e5-small", proj="mlp",
                                                              head_dropout=0.5, text_unlocked=12)
    captions = tmp_path / "captions.jsonl"
    captions.write_text("")
    for flags, named in ((["--init", "bundled", "--locca", "1"], "--locca is an option of a model from scratch"),
                         (kinds["bases"] + ["--naflex"], "--naflex is an option of a model from scratch"),
                         (["--init", "bundled", "--embed-dim", "64"], "--embed-dim is an option of a model on "
                                                                       "pretrained bases")):
        refused = run_module("train", "--captions", str(captions), "--images", ".", "--out", str(tmp_path / "r"),
                             "--steps", "1", *flags, check=False)
        assert refused.returncode == 2 and named in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def _parsed(flags: list[str]) -> dict:
    options = vars(_parser().parse_args(["--out", "o", "--steps", "1", *flags]))
    return {key: value for key, value in options.items() if key not in ("recipe", "resume")}


def test_unknown_base_and_half_a_pretrained_model_are_refused(flickr, small_captions, tmp_path):
    args = ["--captions", str(small_captions), "--images", str(flickr / "images"), "--out", str(tmp_path / "x"),
            "--steps", "1"]
    result = run_module("train", *args, "--image-base", "efficientnet-lite0", check=False)
    assert result.returncode == 2 and "both --image-base and --text-base" in result.stderr


def test_tokenizer_command_covers_every_language(small_captions, tmp_path):
    run_module("train", "tokenizer", "--captions", str(small_captions), "--vocab", "500", "--out", str(tmp_path))
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert 300 <= processor.get_piece_size() <= 500
    for text in ("zwei hunde im schnee", "两只狗", "deux chiens", "dva psi"):
        assert processor.unk_id() not in processor.encode(text.lower())
    too_small = run_module("train", "tokenizer", "--captions", str(small_captions), "--vocab", "50", "--out",
                           str(tmp_path / "small"), check=False)
    assert too_small.returncode == 2 and "choose a vocabulary size above" in too_small.stderr


def test_webdataset_shards_hold_the_caption_file_and_train_like_it(tmp_path, flickr, small_captions):
    shards = tmp_path / "shards"
    run_module("train", "shards", "--captions", str(small_captions), "--images", str(flickr / "images"),
               "--out", str(shards), "--shard-size", "20")
    assert [path.name for path in sorted(shards.glob("*.tar"))] == [f"shard-{i:06d}.tar" for i in range(3)]
    images, photos = read_shards(str(shards))
    expected = read_captions(small_captions)
    assert [(i.key, i.captions) for i in images] == [(i.key, i.captions) for i in expected]
    assert all(photos[i.key].data == (flickr / "images" / f"{i.key}.jpg").read_bytes() for i in expected)
    assert len(read_shards(str(shards / "shard-{000000..000001}.tar"))[0]) == 40  # a brace pattern
    key = image_keys([photos[expected[0].key]])[0]
    assert key.startswith(str(shards.resolve())) and key.endswith(expected[0].key)

    run = tmp_path / "run"
    run_module("train", "--shards", str(shards), "--out", str(run), "--steps", "3", "--batch-size", "16",
               "--vocab-size", "400", "--warmup-steps", "1")
    assert load_encoder(str(run)).embed_texts(["a dog"]).shape[0] == 1
    both = run_module("train", "--shards", str(shards), "--captions", str(small_captions), "--images",
                      str(flickr / "images"), "--out", str(tmp_path / "x"), "--steps", "1", check=False)
    assert both.returncode == 2 and "not both" in both.stderr


def test_any_evaluation_of_python_m_eval_runs_during_training(flickr, small_captions, tmp_path):
    """big_vision's config.evals: `--eval COMMAND` runs on the checkpoint every --eval-every steps and at the end,
    its result in metrics.jsonl beside the validation recall; a broken one stops the run in one line."""
    cifar = flickr.parent / "cifar10" / "test"
    for name in ("cat", "dog", "ship"):
        (tmp_path / "set" / name).mkdir(parents=True)
        for image in sorted((cifar / name).iterdir())[:2]:
            shutil.copy(image, tmp_path / "set" / name)
    command = f"zeroshot --images {tmp_path / 'set'} --languages en,de --no-cache"
    _train(flickr, small_captions, tmp_path / "run", "--vocab-size", "400", "--steps", "3", "--eval-every", "2",
           "--val-captions", str(small_captions), "--eval", command)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval" in row]
    assert [(row["step"], row["eval"]) for row in evals] == [(2, command), (3, command)]
    assert sorted(evals[-1]["result"]) == ["de", "en"] and evals[-1]["result"]["en"]["images"] == 6
    assert [row["step"] for row in rows if "val" in row] == [2, 3]  # the validation recall too
    broken = run_module("train", "--captions", str(small_captions), "--images", str(flickr / "images"), "--out",
                        str(tmp_path / "broken"), "--steps", "1", "--vocab-size", "400", "--eval-every", "1",
                        "--eval", "zeroshot --images /nowhere", check=False)
    assert broken.returncode == 2 and "--eval 'zeroshot --images /nowhere' failed" in broken.stderr
    assert "Traceback" not in broken.stderr
