"""The data step (`python -m train data`): labelled trees and titled photos as captions in five languages."""

import json

import numpy as np
from PIL import Image
from safetensors import safe_open

from common.captions import image_file, read_captions
from tests.conftest import REPO
from train.__main__ import main as train_main
from train.labelled import DATA, LANGUAGES, label_table, photo_title
from train.words import caption_words, photo_words


def _photo(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _tree(root) -> None:
    for i in range(6):
        _photo(root / "cats" / f"cat.{i}.jpg", i)
        _photo(root / "ketch" / f"image_{i:04d}.jpg", 100 + i)
    _photo(root / "BACKGROUND_Google" / "clutter.jpg", 200)


def _run(capsys, *argv: str) -> tuple[int, str]:
    status = train_main(["data", *map(str, argv)])
    return status, capsys.readouterr().out


def test_a_labelled_tree_becomes_captions_in_five_languages_that_hold_every_name(tmp_path, capsys):
    _tree(tmp_path / "tree")
    status, out = _run(capsys, "--tree", tmp_path / "tree", "--name", "tiny", "--out", tmp_path / "out",
                       "--val-share", "0.3")
    assert status == 0 and "BACKGROUND_Google" in out  # a folder that is no label is named, not taken
    records = [r for split in ("train", "val") for r in read_captions(tmp_path / "out" / f"captions_{split}.jsonl")]
    assert len(records) == 12 and all(image_file(tmp_path / "out" / "images", r.key).is_file() for r in records)
    assert 0 < len(read_captions(tmp_path / "out" / "captions_val.jsonl")) < 12
    ketch = next(r for r in records if r.key.startswith("ketch/"))
    assert set(ketch.captions) == set(LANGUAGES)
    # every name of every label holds as the words learner reads captions (two captions say it)
    table = label_table()
    for record in records:
        label = record.key.split("/")[0]
        for lang in LANGUAGES:
            for name in table[label][lang]:
                assert caption_words(name, lang) <= photo_words(record.captions[lang], lang), (name, lang)
    assert {"sailboat", "boat"} <= photo_words(ketch.captions["en"], "en")
    assert "船" in photo_words(ketch.captions["zh"], "zh")
    counts = json.loads((tmp_path / "out" / "source.json").read_text())
    assert counts["source"] == "tiny" and counts["labels"] == {"cats": 6, "ketch": 6}
    assert json.loads((tmp_path / "out" / "labels.json").read_text())["ketch"]["de"] == ["Segelboot", "Boot"]


def test_a_photo_whose_bytes_are_in_an_evaluation_set_is_dropped(tmp_path, capsys):
    _tree(tmp_path / "tree")
    evaluation = tmp_path / "eval" / "images"
    evaluation.mkdir(parents=True)
    (evaluation / "held-out.jpg").write_bytes((tmp_path / "tree" / "cats" / "cat.3.jpg").read_bytes())
    record = {"image/key": "held-out", "en": {"caption": ["x"]}}
    (tmp_path / "eval" / "captions_test.jsonl").write_text(json.dumps(record) + "\n")
    _photo(tmp_path / "other-eval" / "a.png", 4)  # same pixels as cat.4, other bytes: kept
    cats = tmp_path / "tree" / "cats"
    (cats / "copy-of-cat.5.jpg").write_bytes((cats / "cat.5.jpg").read_bytes())
    status, out = _run(capsys, "--tree", tmp_path / "tree", "--name", "tiny", "--out", tmp_path / "out",
                       "--exclude", tmp_path / "eval" / "captions_test.jsonl", "--exclude", tmp_path / "other-eval")
    counts = json.loads((tmp_path / "out" / "source.json").read_text())
    assert status == 0 and counts["evaluation_copies"] == 1 and counts["duplicates"] == 1
    assert counts["train"] + counts["val"] == 11 and "1 also in an evaluation set" in out


def test_titled_photos_caption_their_title_and_its_concepts(tmp_path, capsys):
    assert photo_title("nasa_3_2025-03-20_The_Solar_Eclipse_An") == "The Solar Eclipse An"
    _photo(tmp_path / "titles" / "nasa_2023-02-25_Crescent_Moon_Occultation.jpg", 1)
    _photo(tmp_path / "titles" / "nasa_2023-03-02_Unraveling_NGC_3169.jpg", 2)
    status, _ = _run(capsys, "--titles", tmp_path / "titles", "--name", "sky", "--out", tmp_path / "out",
                     "--val-share", "0")
    records = {r.key.split("/")[0]: r for r in read_captions(tmp_path / "out" / "captions_train.jsonl")}
    assert status == 0 and set(records) == {"moon", "titled"}
    moon = records["moon"].captions
    assert moon["en"][0] == "Crescent Moon Occultation" and "moon" in photo_words(moon["en"], "en")
    assert "月亮" in photo_words(moon["zh"], "zh") and "mond" in photo_words(moon["de"], "de")
    assert records["titled"].captions == {"en": ["Unraveling NGC 3169"]}  # no concept: its title alone


def test_every_label_is_named_in_every_language():
    for label, names in label_table().items():
        assert all(names.get(lang) for lang in LANGUAGES), label


def test_models_readme_lists_every_source_the_bundled_words_were_fitted_on():
    readme = (REPO / "models" / "README.md").read_text(encoding="utf-8")
    sources = json.loads((DATA / "sources.json").read_text(encoding="utf-8"))["sources"]
    assert len(sources) >= 4
    for source in sources:
        row = next((line for line in readme.splitlines() if line.startswith(f"| {source['name']} |")), None)
        assert row is not None, f"models/README.md has no row for {source['name']}"
        assert f"{source['photos']:,}" in row and source["licence"].split(" (")[0].split(",")[0] in row
        if source["repository"]:
            assert source["repository"] in row and source["commit"][:12] in row
    with safe_open(str(REPO / "models" / "bundled" / "words.safetensors"), framework="np") as words:
        fitted_on = json.loads(words.metadata()["sources"])
    assert sorted(fitted_on) == sorted(["flickr8k"] + [s["name"] for s in sources])
