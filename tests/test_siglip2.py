"""SigLIP 2 on the generated scenes: the testbed, LocCa, SILC/TIPS (EMA, masks, schedule), NaFlex (batch
invariance, native aspect in the encoder and indexer), resume, eval CLIs."""

import json
import random

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from common.captions import read_captions
from embedding import load_encoder
from embedding.locca import DecoderConfig, LocCaDecoder, caption_images, image_tokens, load_decoder, locate, vit_forward
from embedding.naflex import NaFlexBatch, naflex_forward, patch_grid
from eval.dense import patch_labels
from eval.locca import box_iou
from indexer import Library, index_folders
from tests.conftest import STORED_ATOL, run_module, serving, torchrun
from train.config import ObjectiveWeights, SelfDistillConfig, TrainConfig
from train.model import build_model
from train.presets import siglip_config
from train.scenes import KINDS, LANGUAGES, SHAPES, Thing, caption, generate, render
from train.siglip2 import (
    LocCaExamples,
    SelfDistillation,
    SigLIP2Objectives,
    mask_patches,
    patch_mask,
)
from train.trainer import train


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("scenes"), {"train": 48, "val": 8, "test": 12}, seed=3)


def _tiny_vit():
    model_cfg, _ = siglip_config("tiny", vocab_size=100)
    return build_model(model_cfg).visual


def test_captions_agree_in_number_and_gender_in_every_language():
    circle = Thing("circle", "red", "large", "striped", (0, 0, 10, 10), "left")
    bar = Thing("bar", "blue", "tall", "plain", (20, 0, 4, 12), "right")
    assert caption([circle, bar], "objects", "en") == \
        "a large striped red circle on the left and a tall blue bar on the right"
    assert caption([circle, bar], "objects", "de") == \
        "ein großer gestreifter roter Kreis links und ein hoher blauer Balken rechts"
    assert caption([circle, bar], "objects", "fr") == \
        "un grand cercle rouge rayé à gauche et une barre bleue verticale à droite"
    assert caption([circle, bar], "objects", "zh") == "左边一个大红色条纹圆形和右边一个竖蓝色长条"
    two = [circle, Thing("circle", "red", "small", "dotted", (30, 0, 5, 5), "right")]
    assert [caption(two, "count", lang) for lang in LANGUAGES] == \
        ["two red circles", "zwei rote Kreise", "deux cercles rouges", "两个红色圆形"]
    assert caption([circle, bar], "single", "en", focus=1) == "a tall blue bar on the right"


def test_generated_scenes_have_exact_boxes_masks_and_captions(scenes):
    """Every box lies in its image and its mask holds the object's class there; captions read back."""
    images = read_captions(scenes / "captions_train.jsonl")
    assert len(images) == 48 and all(sorted(i.captions) == sorted(LANGUAGES) for i in images)
    assert all(len(c) == len(KINDS) for i in images for c in i.captions.values())
    for kind in KINDS:
        assert len(read_captions(scenes / f"captions_test_{kind}.jsonl")) == 12
    coco = json.loads((scenes / "instances_train.json").read_text())
    sizes = {image["id"]: (image["width"], image["height"], image["file_name"]) for image in coco["images"]}
    with_refs = 0
    for annotation in coco["annotations"]:
        width, height, name = sizes[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
        mask = np.asarray(Image.open(scenes / "masks" / name.replace(".jpg", ".png")))
        assert mask.shape == (height, width)
        assert mask[y + h // 2, x + w // 2] == annotation["category_id"]  # every shape covers its box centre
        with_refs += "refs" in annotation
        if "refs" in annotation:
            assert sorted(annotation["refs"]) == sorted(LANGUAGES)
    assert with_refs > len(coco["annotations"]) // 2
    rendered = [render(random.Random(seed))[0].size for seed in range(20)]
    assert len({w / h for w, h in rendered}) >= 3  # several aspect ratios


def test_vit_forward_is_open_clips_forward_and_masks_only_what_it_is_told():
    visual = _tiny_vit().eval()
    pixels = torch.randn(3, 3, 64, 64)
    pooled, tokens = vit_forward(visual, pixels)
    torch.testing.assert_close(pooled, visual(pixels))
    assert tokens.shape == (3, 64, 192)
    mask = torch.zeros(3, 64, dtype=torch.bool)
    torch.testing.assert_close(vit_forward(visual, pixels, mask_patches(mask, torch.zeros(192)))[0], pooled)
    mask[0, :32] = True
    masked, _ = vit_forward(visual, pixels, mask_patches(mask, torch.zeros(192)))
    assert not torch.allclose(masked[0], pooled[0])
    torch.testing.assert_close(masked[1:], pooled[1:])  # one image's mask leaves the others alone


def test_locca_examples_train_on_answers_only():
    config = DecoderConfig(text_vocab=50, languages=["de", "en"], image_width=192, bins=10)
    captions = torch.tensor([[7, 8, 9, 1, 0], [11, 12, 1, 0, 0]])  # token rows ending in EOS (1), padded (0)
    refs = [[([0.1, 0.2, 0.55, 0.95], {"en": [20, 21]})]]
    examples = LocCaExamples(config, captions, [0, 0], ["en", "de"], refs)
    sequences, answers, rows = examples.batch([0], torch.Generator().manual_seed(0))
    assert rows.tolist() == [0, 0]
    cap, task = sequences[0].tolist(), sequences[1].tolist()
    assert cap[0] == config.task("cap") and cap[1] in (config.language("en"), config.language("de"))
    assert answers[0].tolist()[:2] == [False, False] and answers[0, 2]
    box = config.box_tokens([0.1, 0.2, 0.55, 0.95])
    assert box == [config.first_bin + b for b in (1, 2, 5, 9)]
    if task[0] == config.task("ref"):  # expression -> box: only the box and EOS are answers
        assert task[:5] == [config.task("ref"), config.language("en"), 20, 21, config.sep]
        assert [t for t, a in zip(task, answers[1].tolist(), strict=True) if a] == box + [1]
    else:                              # box -> expression
        assert task[:7] == [config.task("gcap"), config.language("en"), *box, config.sep]
        assert [t for t, a in zip(task, answers[1].tolist(), strict=True) if a] == [20, 21, 1]
    assert np.allclose(config.box_from_tokens(box), [0.15, 0.25, 0.55, 0.95])


def test_decoder_reads_boxes_only_from_coordinate_tokens():
    config = DecoderConfig(text_vocab=50, languages=["en"], image_width=192, bins=16)
    decoder = LocCaDecoder(config).eval()
    tokens = torch.randn(2, 64, 192)
    prompt = [config.task("ref"), config.language("en"), 5, 6, config.sep]
    boxes = decoder.generate(tokens, [prompt, prompt], 4, allowed=range(config.first_bin, config.vocab_size))
    assert [len(b) for b in boxes] == [4, 4]
    assert all(config.first_bin <= t < config.vocab_size for b in boxes for t in b)
    logits = decoder(tokens, torch.tensor([prompt, prompt]))
    assert logits.shape == (2, 5, config.vocab_size) and torch.isfinite(logits).all()


def test_self_distillation_switches_on_late_and_the_teacher_follows_by_ema():
    torch.manual_seed(0)
    visual = _tiny_vit()
    objectives = SigLIP2Objectives(ObjectiveWeights(silc=1.0, tips=0.5, distill_from=0.8), visual, None,
                                   SelfDistillConfig(momentum=0.9, prototypes=64))
    pixels = torch.randn(4, 3, 64, 64)
    assert objectives.losses(visual, pixels, slice(0, 4), None, None, [0, 1, 2, 3], progress=0.5) == {}
    terms = objectives.losses(visual, pixels, slice(0, 4), None, None, [0, 1, 2, 3], progress=0.8)
    assert set(terms) == {"silc", "tips"} and all(torch.isfinite(v) and v > 0 for v in terms.values())
    teacher = objectives.distill.teacher.module["visual"]
    student_before = {k: v.clone() for k, v in visual.state_dict().items()}
    for name, value in teacher.state_dict().items():  # switched on: the teacher is a copy of the student
        torch.testing.assert_close(value, student_before[name])
    optimizer = torch.optim.SGD([p for p in visual.parameters()], lr=0.1)
    objectives.total(terms).backward()
    optimizer.step()
    objectives.after_step(visual)
    name = "conv1.weight"
    expected = 0.9 * student_before[name] + 0.1 * visual.state_dict()[name]
    torch.testing.assert_close(teacher.state_dict()[name], expected)
    assert not any(p.requires_grad for p in objectives.distill.teacher.parameters())


def test_siglip2_run_resumes_exactly_and_its_decoder_captions_and_locates(scenes, tmp_path):
    """LocCa + SILC + TIPS (on from mid-run): a stopped-and-resumed run logs every term exactly as the
    straight run; the run folder loads in eval's caption, locca and dense commands."""
    def run(out, *extra):
        run_module("train", "--captions", str(scenes / "captions_train.jsonl"), "--images", str(scenes / "images"),
                   "--instances", str(scenes / "instances_train.json"), "--out", str(out), "--no-flip",
                   "--vocab-size", "200", "--steps", "6", "--batch-size", "8", "--warmup-steps", "2",
                   "--log-every", "1", "--checkpoint-every", "2", "--locca", "1", "--silc", "1", "--tips", "0.5",
                   "--distill-from", "0.5", *extra)

    run(tmp_path / "straight")
    run(tmp_path / "split", "--stop-after", "4")
    run_module("train", "--resume", str(tmp_path / "split"))
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    terms = [{k: r[k] for k in ("step", "loss", "t", "b", "locca", "silc", "tips") if k in r} for r in rows]
    assert terms == [{k: r[k] for k in ("step", "loss", "t", "b", "locca", "silc", "tips") if k in r}
                     for r in resumed]
    assert "silc" not in rows[2] and "tips" in rows[3]  # on from half-way: steps 4..6
    run_dir = tmp_path / "straight"
    pictures = [scenes / "images" / "test-000000.jpg", scenes / "images" / "test-000001.jpg"]
    captions = run_module("eval", "caption", "--model", str(run_dir), "--languages", "de", *map(str, pictures))
    located = run_module("eval", "locca", "--model", str(run_dir), "--instances", str(scenes / "instances_test.json"),
                         "--images", str(scenes / "images"), "--json", str(tmp_path / "ref.json"))
    ref = json.loads((tmp_path / "ref.json").read_text())
    assert "Ref acc@IoU0.5" in located.stdout and sorted(ref) == sorted([*LANGUAGES, "mean"])
    assert ref["mean"]["acc_iou50"] == pytest.approx(np.mean([ref[lang]["acc_iou50"] for lang in LANGUAGES]))
    encoder, decoder = load_encoder(str(run_dir)), load_decoder(run_dir)
    expected = caption_images(encoder, decoder, pictures, "de")  # the command prints the decoder's own captions
    assert captions.stdout.splitlines() == [f"{picture}\tde\t{text}" for picture, text in zip(pictures, expected,
                                                                                              strict=True)]
    coco = json.loads((scenes / "instances_test.json").read_text())
    files = {image["id"]: image for image in coco["images"]}
    hits = []  # the English figure again, one expression at a time through `locate`
    for annotation in (a for a in coco["annotations"] if a.get("refs", {}).get("en")):
        image = files[annotation["image_id"]]
        truth = DecoderConfig.coco_box(annotation["bbox"], image["width"], image["height"])
        box = locate(encoder, decoder, scenes / "images" / image["file_name"], annotation["refs"]["en"], "en")
        hits.append(box_iou(box, truth) >= 0.5)
    assert ref["en"]["n"] == len(hits) > 0
    # (the command decodes 64 images at a time: float noise may flip at most one borderline box)
    assert abs(ref["en"]["acc_iou50"] - 100 * np.mean(hits)) <= 100 / len(hits) + 1e-9
    run_module("eval", "dense", "--model", str(run_dir), "--scenes", str(scenes), "--train-images", "20",
               "--json", str(tmp_path / "dense.json"))
    dense = json.loads((tmp_path / "dense.json").read_text())
    assert dense["classes"] == len(SHAPES) + 1 and dense["test_patches"] == 12 * 64
    correct = dense["patch_accuracy"] / 100 * dense["test_patches"]  # a share of the 768 test patches
    assert correct == pytest.approx(round(correct), abs=1e-3) and 0 < correct <= dense["test_patches"]
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(scenes / "images" / "test-000000.jpg").save(photos / "scene.jpg")
    library = Library(tmp_path / "library")
    index_folders(library, load_encoder(str(run_dir)), [photos], progress=False)
    library.close()
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with serving("--library", str(tmp_path / "library"), env=env) as url:  # the app captions with the decoder
        written = Client(url, verbose=False).predict(handle_file(str(photos / "scene.jpg")), "fr",
                                                     api_name="/caption")
    expected = caption_images(load_encoder(str(run_dir)), load_decoder(run_dir), [photos / "scene.jpg"], "fr")
    assert written == expected[0]


def test_siglip2_objectives_need_a_from_scratch_vit(tmp_path):
    options = dict(captions=tmp_path / "c.jsonl", images=tmp_path, out=tmp_path / "run", steps=1,
                   image_base="efficientnet-lite0", text_base="e5-small", locca=1.0)
    with pytest.raises(ValueError, match="from scratch"):
        train(TrainConfig.from_options(options))
    Image.new("RGB", (32, 32)).save(tmp_path / "x.jpg")  # a photo there: the refusal is the model's
    missing = run_module("eval", "caption", "--model", "bundled", str(tmp_path / "x.jpg"), check=False)
    assert missing.returncode == 2 and "locca" in missing.stderr.lower()


def test_patch_labels_take_each_patchs_majority_class(tmp_path):
    mask = np.zeros((16, 32), dtype=np.uint8)
    mask[:, 16:] = 3           # right half: class 3
    mask[0:3, 0:4] = 2         # a corner smaller than half a patch stays background
    Image.fromarray(mask).save(tmp_path / "m.png")
    labels = patch_labels(tmp_path / "m.png", side=16, patch=4)  # squashed to 16 x 16: 4 x 4 patches
    assert labels.reshape(4, 4).tolist() == [[0, 0, 3, 3]] * 4
    assert box_iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0 and box_iou([0, 0, 0.5, 1], [0.5, 0, 1, 1]) == 0.0
    assert box_iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)


def test_naflex_grid_keeps_the_aspect_ratio_within_the_budget():
    assert patch_grid(64, 64, 8, 64) == (8, 8)  # a square fills the square grid
    for width, height in [(128, 64), (64, 128), (96, 128), (1000, 10), (10, 1000), (33, 77)]:
        rows, columns = patch_grid(width, height, 8, 64)
        assert 1 <= rows * columns <= 64
        if min(rows, columns) > 2:  # a grid of several patches each way follows the image's shape
            assert abs(columns / rows - width / height) / (width / height) < 0.35
    assert patch_grid(1000, 10, 8, 64) == (1, 64)


def test_naflex_forward_is_the_vit_on_a_square_and_does_not_depend_on_its_batch():
    """At the square grid NaFlex is the ViT's own forward; padding is masked out of attention and pooling."""
    torch.manual_seed(0)
    visual = _tiny_vit().eval()
    square, wide, tall = torch.randn(3, 64, 64), torch.randn(3, 40, 88), torch.randn(3, 88, 40)
    with torch.no_grad():
        expected, _ = vit_forward(visual, square[None])
        alone, tokens, valid = naflex_forward(visual, NaFlexBatch((wide,)))
        batched, _, batched_valid = naflex_forward(visual, NaFlexBatch((tall, wide, square)))
    torch.testing.assert_close(batched[2], expected[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=0)
    assert tokens.shape[1] == 55 and valid.all() and batched_valid.sum(1).tolist() == [55, 55, 64]


def test_naflex_masks_patches_as_the_square_forward_does_and_the_decoder_ignores_padding():
    """TIPS's mask token in NaFlex is vit_forward's at the square grid; the LocCa decoder reads an image padded
    in a NaFlex batch exactly as alone, and without padding it is open_clip's MultimodalTransformer."""
    torch.manual_seed(0)
    visual = _tiny_vit().eval()
    square, wide = torch.randn(3, 64, 64), torch.randn(3, 40, 88)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, ::3] = True
    token = torch.randn(192)
    config = DecoderConfig(text_vocab=50, languages=["en"], image_width=192)
    decoder = LocCaDecoder(config).eval()
    sequences = torch.tensor([[config.task("cap"), config.language("en"), 7, 8, 9]] * 2)
    with torch.no_grad():
        expected, expected_tokens = vit_forward(visual, square[None], mask_patches(mask[:1], token))
        pooled, tokens, valid = naflex_forward(visual, NaFlexBatch((wide, square)), mask_patches(mask, token))
        alone, alone_tokens, _ = naflex_forward(visual, NaFlexBatch((wide,)), mask_patches(mask[:1, :55], token))
        torch.testing.assert_close(pooled[1], expected[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(tokens[0, :55], alone_tokens[0], atol=1e-5, rtol=0)
        padded = decoder(tokens, sequences, valid)
        torch.testing.assert_close(padded[0], decoder(alone_tokens, sequences[:1])[0], atol=1e-5, rtol=0)
        x = decoder.embed(sequences) + decoder.position[:5]
        torch.testing.assert_close(decoder(tokens, sequences), decoder.blocks(decoder.image_proj(tokens), x))
    assert not torch.allclose(padded[0], decoder(tokens, sequences)[0], atol=1e-3)  # the padding was masked


def test_tips_masks_real_patches_only_and_silc_crops_stay_inside_each_image():
    torch.manual_seed(0)
    valid = torch.arange(64) < torch.tensor([[64], [55], [10], [1]])
    for _ in range(5):
        mask = patch_mask(valid, 0.5)
        assert not (mask & ~valid).any() and mask.sum(1).tolist() == [32, 28, 5, 0]
    distill = SelfDistillation(_tiny_vit(), SelfDistillConfig(local_crops=3, prototypes=16))
    images = NaFlexBatch((torch.full((3, 40, 88), 1.0), torch.full((3, 64, 64), 2.0), torch.full((3, 88, 40), 3.0)))
    crops = distill._crops(images, (64, 64))
    assert crops.shape == (9, 3, 64, 64)  # crop-major: crop k of image i is row k * 3 + i
    values = crops.reshape(3, 3, -1)
    for image in range(3):  # a crop reaching the zero padding of the batch would mix in zeros
        torch.testing.assert_close(values[:, image], torch.full_like(values[:, image], image + 1.0))


def test_a_naflex_run_embeds_images_at_their_own_aspect_everywhere(scenes, tmp_path):
    """NaFlex for the second half of a run; the checkpoint then embeds at native aspect in the encoder and
    the indexer, and a vector does not depend on what it is batched with."""
    run_module("train", "--captions", str(scenes / "captions_train.jsonl"), "--images", str(scenes / "images"),
               "--out", str(tmp_path / "run"), "--no-flip", "--vocab-size", "200", "--steps", "4", "--batch-size",
               "8", "--warmup-steps", "1", "--log-every", "1", "--naflex", "--naflex-from", "0.5")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["naflex"] for row in rows if "loss" in row] == [False, False, True, True]
    encoder = load_encoder(str(tmp_path / "run"))
    assert encoder.naflex is not None
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, key in enumerate(["train-000000", "train-000001", "train-000002", "train-000003"]):
        Image.open(scenes / "images" / f"{key}.jpg").save(photos / f"{i}.jpg")
    paths = sorted(photos.glob("*.jpg"))
    sides = {tuple(encoder.pixels(path).shape[1:]) for path in paths}
    assert any(h != w for h, w in sides) and all(h * w <= 64 * 64 for h, w in sides)
    together = encoder.embed_images(paths)
    np.testing.assert_allclose(encoder.embed_images(paths[:1]), together[:1], atol=1e-5)
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)
    for path, vector in zip(paths, together, strict=True):
        np.testing.assert_allclose(library.vector(str(path)), vector, atol=STORED_ATOL)


def test_naflex_trains_with_locca_silc_and_tips_in_one_process_or_two_and_the_decoder_reads_native_tokens(
        scenes, tmp_path):
    """All four together: the objectives read the NaFlex batches (every term logged and finite), and two
    processes under torchrun log the steps of one; the decoder then captions and locates at native aspect,
    and a caption does not depend on its batch."""
    args = ["--captions", str(scenes / "captions_train.jsonl"), "--images", str(scenes / "images"), "--instances",
            str(scenes / "instances_train.json"), "--no-flip", "--vocab-size", "200", "--steps", "4", "--batch-size",
            "8", "--warmup-steps", "1", "--log-every", "1", "--locca", "1", "--silc", "1", "--tips", "1",
            "--distill-from", "0.5", "--naflex", "--naflex-from", "0.5"]
    run_module("train", *args, "--out", str(tmp_path / "one"))
    done = torchrun(2, "train", *args, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    curves = {}
    for run in ("one", "two"):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        curves[run] = [row for row in rows if "loss" in row]
    one = curves["one"]
    assert [row["naflex"] for row in one] == [False, False, True, True]
    assert all(np.isfinite(row[term]) and row[term] > 0 for row in one[2:] for term in ("locca", "silc", "tips"))
    for name in ("loss", "t", "b", "locca", "silc", "tips"):
        np.testing.assert_allclose([row.get(name, 0) for row in curves["two"]], [row.get(name, 0) for row in one],
                                   rtol=2e-4, atol=1e-4, err_msg=name)
    encoder, decoder = load_encoder(str(tmp_path / "one")), load_decoder(tmp_path / "one")
    paths = [scenes / "images" / f"test-00000{i}.jpg" for i in range(3)]
    _, tokens, valid = image_tokens(encoder, paths)
    assert len({int(n) for n in valid.sum(1)}) > 1  # several grids, so the batch was padded
    assert caption_images(encoder, decoder, paths, "en")[1:2] == caption_images(encoder, decoder, paths[1:2], "en")
    box = locate(encoder, decoder, paths[0], "a small red circle", "en")
    assert len(box) == 4 and all(0 <= v <= 1 for v in box)
