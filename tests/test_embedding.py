"""The shared embedding layer: checkpoints, fingerprints, hub specs offline, image modes."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import open_clip
import pytest
import torch
from open_clip.tokenizer import HFTokenizer
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from torchvision.transforms import Compose
from transformers import PreTrainedTokenizerFast

from common.images import open_rgb, to_rgb
from embedding import EncoderUnavailable, load_encoder
from embedding.checkpoint import build_preprocess
from embedding.loading import process_device
from embedding.tokenizer import EOS_ID, PAD_ID
from embedding.transform import ImageTransform
from tests.conftest import REPO, TEXTS


def photo(size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_round_trip_gives_the_trained_models_vectors(checkpoint):
    folder, model = checkpoint
    encoder = load_encoder(str(folder))
    tokens = encoder.tokenizer(TEXTS)
    with torch.inference_mode():
        expected = model.eval().encode_text(tokens, normalize=True).numpy()
    np.testing.assert_array_equal(encoder.embed_texts(TEXTS), expected)
    again = load_encoder(f"local-dir:{folder}")
    np.testing.assert_array_equal(again.embed_texts(TEXTS), encoder.embed_texts(TEXTS))
    np.testing.assert_array_equal(again.embed_images([photo()]), encoder.embed_images([photo()]))


def test_vectors_are_float32_unit_norm_and_batch_independent(checkpoint):
    encoder = load_encoder(str(checkpoint[0]))
    texts = encoder.embed_texts(TEXTS, batch_size=2)
    assert texts.dtype == np.float32 and texts.shape == (5, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(texts, encoder.embed_texts(TEXTS, batch_size=5), atol=1e-5)
    assert encoder.embed_texts([]).shape == (0, encoder.dim)
    images = encoder.embed_images([photo(), photo((64, 64))], batch_size=1)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, rtol=1e-5)


def test_probability_uses_the_models_temperature_and_bias(checkpoint):
    encoder = load_encoder(str(checkpoint[0]))
    assert encoder.temperature == pytest.approx(10.0, rel=1e-5)  # t' = log 10 at init
    assert encoder.bias == pytest.approx(-10.0)
    np.testing.assert_allclose(encoder.probability([1.0, 0.0]), [0.5, 1 / (1 + np.exp(10))], rtol=1e-5)


def test_tokenizer_pads_to_context_with_end_token_last(checkpoint):
    encoder = load_encoder(str(checkpoint[0]))
    tokens = encoder.tokenizer(["dog", "dog " * 100])
    assert tokens.shape == (2, 32)
    length = int((tokens[0] != PAD_ID).sum())
    assert tokens[0, length - 1] == EOS_ID and (tokens[0, length:] == PAD_ID).all()
    assert tokens[1, -1] == EOS_ID  # truncated, end token kept
    assert torch.equal(encoder.tokenizer(["DOG"]), encoder.tokenizer(["dog"]))  # lowercased


def test_fingerprint_is_stable_and_changes_with_weights_or_tokenizer(checkpoint, tmp_path):
    folder, model = checkpoint
    first = load_encoder(str(folder)).fingerprint
    assert load_encoder(f"local-dir:{folder}").fingerprint == first
    changed = tmp_path / "changed"
    changed.mkdir()
    for item in folder.iterdir():
        (changed / item.name).write_bytes(item.read_bytes())
    config = json.loads((changed / "open_clip_config.json").read_text())
    config["tokenizer"]["context_length"] = 16
    (changed / "open_clip_config.json").write_text(json.dumps(config))
    assert load_encoder(str(changed)).fingerprint != first
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["logit_bias"] += 0.5
    save_file(state, str(changed / "open_clip_model.safetensors"))
    config["tokenizer"]["context_length"] = 32
    (changed / "open_clip_config.json").write_text(json.dumps(config))
    assert load_encoder(str(changed)).fingerprint != first


def test_open_clip_local_dir_uses_open_clips_tokenizer(open_clip_folder):
    folder, model = open_clip_folder
    encoder = load_encoder(f"local-dir:{folder}")
    tokens = open_clip.get_tokenizer(f"local-dir:{folder}")(TEXTS)
    with torch.inference_mode():
        expected = model.eval().encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(encoder.embed_texts(TEXTS), expected, atol=1e-6)


def test_hub_spec_loads_from_the_local_hugging_face_cache(open_clip_folder, tmp_path):
    folder, _ = open_clip_folder
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny-siglip"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for item in folder.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    from_cache = load_encoder("hf-hub:org/tiny-siglip", hub_cache=str(tmp_path))
    np.testing.assert_array_equal(from_cache.embed_texts(TEXTS), load_encoder(f"local-dir:{folder}").embed_texts(TEXTS))


def test_offline_hub_spec_fails_fast_with_instructions(tmp_path):
    # Measured in a child process around the call alone, so that import time does not count.
    code = (
        "import time, sys\n"
        "from embedding import load_encoder, EncoderUnavailable\n"
        "start = time.time()\n"
        "try:\n"
        "    load_encoder('hf-hub:timm/ViT-B-16-SigLIP2-256')\n"
        "except EncoderUnavailable as error:\n"
        "    print(f'{time.time() - start:.2f}'); print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_CACHE": str(tmp_path), "HOME": str(tmp_path),
                               "HF_ENDPOINT": "https://huggingface.invalid"})
    assert done.returncode == 0, done.stderr
    seconds, message = done.stdout.split("\n", 1)
    assert float(seconds) < 10
    assert "hf download timm/ViT-B-16-SigLIP2-256" in message and "local-dir:" in message
    assert "Traceback" not in done.stdout + done.stderr


def test_preset_names_and_unknown_specs(tmp_path):
    with pytest.raises(EncoderUnavailable, match="presets"):
        load_encoder("no-such-model")
    with pytest.raises(EncoderUnavailable, match="open_clip_config.json"):
        load_encoder(str(tmp_path))


@pytest.mark.parametrize("resize_mode", ["squash", "shortest"])
def test_uint8_pixels_standardized_per_batch_equal_open_clips_transform_bit_for_bit(resize_mode):
    preprocess = build_preprocess({"size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4],
                                   "interpolation": "bicubic", "resize_mode": resize_mode})
    transform = ImageTransform(preprocess)
    images = [photo((40, 30)), photo((64, 80)).convert("L"), photo((50, 50)).convert("RGBA")]
    pixels = torch.stack([transform.pixels(image) for image in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 32, 32)
    expected = torch.stack([preprocess(image) for image in images])
    torch.testing.assert_close(transform.standardize(pixels), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="ending in ToTensor and Normalize"):
        ImageTransform(Compose(preprocess.transforms[:-1]))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = open_rgb(tmp_path / "rotated.jpg")
    assert upright.size == (10, 20)
    top, bottom = np.asarray(upright)[2, 5], np.asarray(upright)[17, 5]
    assert top[0] > 200 and top[2] < 60      # red is on top after rotating clockwise
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV"])
def test_any_pil_mode_becomes_rgb(mode, checkpoint):
    image = photo((24, 16)).convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        image = Image.fromarray(np.full((16, 24), 65535, dtype=np.uint16))
        assert image.mode == "I;16"
    elif mode in ("I", "F"):
        image = Image.fromarray(np.full((16, 24), 40000, dtype=np.int32 if mode == "I" else np.float32))
        image = image if image.mode == mode else image.convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (24, 16)
    if mode in ("I;16", "I", "F"):
        assert np.asarray(rgb).min() > 150  # bright 16-bit data stays bright, not clipped to noise
    vector = load_encoder(str(checkpoint[0])).embed_images([image])
    assert vector.shape == (1, 192) and np.isfinite(vector).all()


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(image))[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert np.asarray(to_rgb(palette))[0, 0].tolist() == [255, 255, 255]


def test_sixteen_bit_scaling_keeps_dark_photos_dark():
    image = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert np.asarray(to_rgb(image))[0, 0].tolist() == [128, 128, 128]


def test_texts_embed_from_many_threads_with_a_fast_tokenizer(open_clip_folder, tmp_path):
    """The app runs up to 4 searches at once: each thread gets its own texts' vectors, also through a
    Hugging Face fast tokenizer as hub models use (some versions raised "Already borrowed" when two
    threads entered one: huggingface/tokenizers#537)."""
    words = ["[PAD]", "[UNK]", "a", "dog", "on", "the", "beach", "two", "children", "in", "snow"]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path)
    encoder = load_encoder(f"local-dir:{open_clip_folder[0]}")
    encoder.tokenizer = HFTokenizer(str(tmp_path), context_length=16)
    texts = ["a dog on the beach", "two children in the snow", "a dog in the snow", "the beach"]
    alone = encoder.embed_texts(texts)
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda text: encoder.embed_texts([text]), texts * 100))
    np.testing.assert_allclose(np.concatenate(together[:len(texts)]), alone, atol=1e-5)


def test_process_device_takes_a_gpu_only_when_there_is_one(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun each process takes its own GPU
    assert process_device("cpu") == "cpu"
    assert process_device("auto") == ("cuda:1" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="choose auto, cpu or cuda"):
        process_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            process_device("cuda")
