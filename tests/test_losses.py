"""The losses: chunked and multi-device forms equal dense; dense equals open_clip; training lowers each."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from tests.conftest import torchrun
from train.losses import chunked_sigmoid_loss, make_loss, ring_sigmoid_loss, sigmoid_loss, softmax_loss

TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-4}


def batch(size: int, dtype=torch.float64, dim: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(size, dim, generator=generator, dtype=dtype), dim=-1)
    texts = F.normalize(images + torch.randn(size, dim, generator=generator, dtype=dtype), dim=-1)
    scale, bias = torch.tensor(2.3, dtype=dtype), torch.tensor(-5.0, dtype=dtype)
    return [v.requires_grad_() for v in (images, texts, scale, bias)]


def value_and_grads(loss_fn, inputs):
    loss = loss_fn(*inputs)
    return [loss.detach(), *torch.autograd.grad(loss, inputs)]


def assert_close(got, expected, tolerance):
    for a, b in zip(got, expected, strict=True):
        assert float((a - b).abs().max() / b.abs().max()) < tolerance


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size,chunk", [(64, 16), (50, 16), (7, 3), (5, 64)])
def test_chunked_equals_dense(dtype, size, chunk):
    inputs = batch(size, dtype)
    assert_close(value_and_grads(lambda *v: chunked_sigmoid_loss(*v, chunk=chunk), inputs),
                 value_and_grads(sigmoid_loss, inputs), TOLERANCE[dtype])


def test_dense_equals_open_clip_siglip_loss():
    images, texts, scale, bias = inputs = batch(40)
    ours = value_and_grads(sigmoid_loss, inputs)
    theirs = value_and_grads(lambda x, y, s, b: SigLipLoss()(x, y, s.exp(), b), inputs)  # open_clip takes t
    assert_close(ours, theirs, 1e-12)


def test_chunked_accepts_bf16_features_and_skips_gradients_without_grad():
    images, texts, scale, bias = batch(24, torch.float32)
    loss = chunked_sigmoid_loss(images.bfloat16(), texts.bfloat16(), scale, bias, chunk=8)
    loss.backward()
    assert images.grad is not None and images.grad.dtype == torch.float32
    reference = sigmoid_loss(images.bfloat16().float(), texts.bfloat16().float(), scale, bias)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    with torch.no_grad():
        assert float(chunked_sigmoid_loss(images, texts, scale, bias, chunk=8)) == pytest.approx(
            float(sigmoid_loss(images, texts, scale, bias)), rel=1e-6)


def test_mismatched_pairs_are_refused():
    images, texts, scale, bias = batch(6)
    with pytest.raises(ValueError, match="pairs must align"):
        chunked_sigmoid_loss(images, texts[:5], scale, bias)


def test_make_loss_picks_the_form():
    assert make_loss("sigmoid") is sigmoid_loss
    assert make_loss("sigmoid", chunk=128).func is chunked_sigmoid_loss
    assert make_loss("sigmoid", distributed=True).func is ring_sigmoid_loss
    assert make_loss("softmax") is softmax_loss
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")


@pytest.mark.parametrize("kind,chunk", [("sigmoid", None), ("sigmoid", 16), ("softmax", None)])
def test_training_steps_lower_the_loss(kind, chunk):
    torch.manual_seed(0)
    images, texts = torch.randn(48, 16), torch.randn(48, 16)
    image_head, text_head = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    scale = torch.nn.Parameter(torch.tensor(2.3))
    bias = torch.nn.Parameter(torch.tensor(-10.0))
    parameters = [*image_head.parameters(), *text_head.parameters(), scale, bias]
    optimizer = torch.optim.Adam(parameters, lr=0.05)
    loss_fn = make_loss(kind, chunk=chunk)
    losses = []
    for _ in range(30):
        loss = loss_fn(F.normalize(image_head(images), dim=-1), F.normalize(text_head(texts), dim=-1), scale, bias)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("world", [2, 4])
def test_multi_device_losses_equal_dense_under_torchrun(world, tmp_path):
    out = tmp_path / "result.json"
    done = torchrun(world, "tests.distributed_losses", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == world and result["mismatched_scales_refused"]
    assert len(result["results"]) == 16
    for case in result["results"]:
        tolerance = TOLERANCE[torch.float64 if "64" in case["dtype"] else torch.float32]
        assert max(case["errors"].values()) < tolerance, case
    for name, run in result["ddp_training"].items():
        assert run["parameter_drift"] < 1e-10, name   # DDP + multi-device loss == one process + dense
        assert run["last_loss"] < 0.7 * run["first_loss"], name


def test_each_loss_brings_its_own_start_for_t_and_b():
    """A model's t and b start where its loss says (`LOSSES`), with no name compared anywhere else."""
    from train.losses import LOSSES, initial_t_b
    from train.presets import siglip_config

    assert initial_t_b("sigmoid") == {"init_logit_scale": pytest.approx(math.log(10)), "init_logit_bias": -10.0}
    assert initial_t_b("sigmoid", init_bias=-4.0)["init_logit_bias"] == -4.0
    assert initial_t_b("softmax", init_bias=-4.0) == {"init_logit_scale": pytest.approx(math.log(1 / 0.07)),
                                                      "init_logit_bias": None}  # no bias: none is made
    for kind, loss in LOSSES.items():
        config, _ = siglip_config("tiny", vocab_size=100, loss=kind)
        assert config["init_logit_scale"] == loss.init_logit_scale
        assert config["init_logit_bias"] == loss.init_logit_bias
    with pytest.raises(ValueError, match="unknown loss 'hinge'; choose one of sigmoid, softmax"):
        initial_t_b("hinge")
