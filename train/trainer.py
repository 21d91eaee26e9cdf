"""The training loop: read it top to bottom. Data -> two towers -> sigmoid loss -> AdamW -> checkpoint.

The run's options are train.config's TrainConfig; the model (from scratch, on pretrained bases, or
fine-tuned) and its checkpoint writer come from train.model, so every kind goes through this one loop.

Under `torchrun --nproc_per_node N -m train ...` every process draws the same global batch and trains
on its 1/N of the rows; the multi-device loss (train.losses) sees all pairs of the global batch and
DistributedDataParallel averages the gradients, so N processes take the steps one process would (SigLIP 2's
terms too: train.siglip2 draws for the whole batch and scales each process's share).
The trained part runs on a CUDA GPU when there is one (NCCL between GPUs), else on the CPU (gloo).

A from-scratch ViT can also train SigLIP 2's extra objectives (train.siglip2: LocCa, SILC, TIPS), each
with its own loss weight; their terms are added to the sigmoid loss and logged one by one; and NaFlex
(embedding.naflex): for the end of the run each image keeps its aspect ratio, and the checkpoint says so,
so the embedding layer reads images the same way.
"""

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.captions import read_captions
from common.files import atomic_write
from common.retrieval import recall_all_captions
from embedding.loading import process_device
from embedding.locca import vit_tokens
from embedding.naflex import ImageBatch, NaFlexBatch, NaFlexTransform, naflex_forward
from embedding.two_towers import TwoTowers
from train.checkpoints import trained_state
from train.config import ObjectiveWeights, SelfDistillConfig, TrainConfig
from train.data import CaptionPairs
from train.evals import run_eval
from train.losses import make_loss
from train.model import Built, build
from train.plot import plot_training
from train.presets import SIZES
from train.shards import read_shards
from train.siglip2 import SigLIP2Objectives, locca_examples

RESUME_FILE = "resume.pt"


@dataclass
class _Process:
    """This process's place in the run: its device, rank and the number of processes (1 without torchrun),
    and the random stream every process shares (the same batches, flips and captions in each)."""
    device: torch.device
    rank: int
    world: int
    rng: random.Random

    @property
    def lead(self) -> bool:  # the process that writes files and reports
        return self.rank == 0


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train and write a checkpoint folder that `load_encoder` reads; `resume` continues a stopped run."""
    me = _start(cfg, resume)
    out = cfg.out

    # 1. Model, tokenizer and data (images decoded once at training resolution, or a locked trunk's cached
    #    features). Under torchrun the lead goes first and the others find its tokenizer and cached features.
    with _lead_first(me):
        built, data, val = _prepare(cfg, me)
    model, objectives = built.model, _objectives(cfg, built, data)
    for part in (model, objectives, data):
        if part is not None:
            part.to(me.device)
    batch_size = min(cfg.batch_size, len(data) - len(data) % me.world)

    # 2. Loss and optimiser: no weight decay on gains, biases, t and b; t and b may have their own rate.
    forward = _forward(cfg, model, data, objectives, me)
    optimizer = make_optimizer(model, cfg, objectives)

    # 3. Resumable state: everything that decides the rest of the run.
    step, elapsed, order = _load_resume(out, model, optimizer, objectives, me) if resume else (0, 0.0, [])

    # 4. The loop.
    log = _Log(cfg, me, resume, step, batch_size * cfg.accum_steps)
    start = time.time() - elapsed
    model.train()
    while True:
        progress = _progress(cfg, step, time.time() - start, me)
        if progress >= 1.0 or (cfg.stop_after is not None and step >= cfg.stop_after):
            break
        lr = lr_factor(cfg, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * lr
        native = cfg.model.native(progress)  # NaFlex: images at their own grids

        optimizer.zero_grad(set_to_none=True)
        loss, terms, order = _accumulate(cfg, me, data, forward, objectives, batch_size, order, progress, native)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        optimizer.step()
        if objectives is not None:
            objectives.after_step(model.visual)
        step += 1

        log.step(step, loss, terms, model, cfg.lr * lr, native, time.time() - start)
        if cfg.eval_every and step % cfg.eval_every == 0:
            _evaluate(cfg, me, built, val, log, step)
        if step % cfg.checkpoint_every == 0 and me.lead:
            built.save(out)
            _save_resume(out, model, optimizer, objectives, me, step, time.time() - start, order)

    # 5. The end: the checkpoint, and either what resumes the run or its last validation.
    stopped = cfg.stop_after is not None and step >= cfg.stop_after and progress < 1.0
    _end(cfg, me, built, val, log, step, time.time() - start,
         (model, optimizer, objectives, order) if stopped else None)
    return out


def resume_training(out: str | Path, stop_after: int | None = None) -> Path:
    """Continue the stopped run in `out` with its own config (optionally to a new stopping step)."""
    path = Path(out) / "train_config.json"
    if not (Path(out) / RESUME_FILE).is_file() or not path.is_file():
        raise FileNotFoundError(f"{out} has no stopped run to resume ({RESUME_FILE} is missing)")
    cfg = TrainConfig.from_options(json.loads(path.read_text()))
    cfg.stop_after = stop_after
    return train(cfg, resume=True)


def make_optimizer(model: nn.Module, cfg: TrainConfig, objectives: nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW over what trains: no weight decay on gains, biases, t and b; t and b at `tb_lr` when given."""
    tb = [p for p in (model.logit_scale, model.logit_bias) if p is not None]
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in tb)]
    if objectives is not None:  # the decoder and heads; the EMA teacher learns no gradient
        rest += [p for p in objectives.parameters() if p.requires_grad]
    groups = [{"params": [p for p in rest if p.ndim >= 2], "weight_decay": cfg.weight_decay, "peak_lr": cfg.lr},
              {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0, "peak_lr": cfg.lr},
              {"params": tb, "weight_decay": 0.0, "peak_lr": cfg.tb_lr or cfg.lr}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Learning-rate factor: linear warmup, then cosine decay to zero over the run's progress (steps or time)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.inference_mode()
def validate(model: nn.Module, val: CaptionPairs) -> dict:
    """Recall (all-captions protocol) per language and the mean, on the in-memory model."""
    was_training = model.training
    model.eval()
    indices = list(range(len(val)))
    embed = _Embed(model, val.images_cached, val.texts_cached)
    image_emb = torch.cat([embed.images(val.image_inputs(indices[i:i + 256])) for i in range(0, len(indices), 256)])
    text_emb = torch.cat([embed.texts(val.texts[i:i + 256]) for i in range(0, len(val.texts), 256)])
    model.train(was_training)
    image_emb, text_emb = image_emb.float().cpu().numpy(), text_emb.float().cpu().numpy()
    caption_image, caption_language = np.array(val.caption_image), np.array(val.caption_language)
    result = {lang: recall_all_captions(image_emb, text_emb[caption_language == lang],
                                        caption_image[caption_language == lang])
              for lang in sorted(set(val.caption_language))}
    mean = {key: float(np.mean([r[key] for r in result.values()])) for key in next(iter(result.values()))}
    return {"languages": result, "mean": mean}


def _start(cfg: TrainConfig, resume: bool) -> _Process:
    """Check the options, join the torchrun job if there is one, write the run's config, seed the streams."""
    cfg.check()
    if (cfg.out / RESUME_FILE).is_file() and not resume:
        raise ValueError(f"{cfg.out} holds a stopped run: continue it with `python -m train --resume {cfg.out}` "
                         f"or choose another --out")
    device = torch.device(process_device(cfg.device))  # cuda:LOCAL_RANK under torchrun
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = _init_distributed(device)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} does not split over {world} processes")
    if rank == 0:
        cfg.out.mkdir(parents=True, exist_ok=True)
        (cfg.out / "train_config.json").write_text(json.dumps(cfg.options(), indent=2, default=str))
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return _Process(device, rank, world, random.Random(cfg.seed))


def _prepare(cfg: TrainConfig, me: _Process) -> tuple[Built, CaptionPairs, CaptionPairs | None]:
    """(the model, the training pairs, the validation pairs: the lead's, when asked for)."""
    images, photos = read_shards(cfg.shards, cfg.languages) if cfg.shards else (
        read_captions(cfg.captions, cfg.languages), cfg.images)
    languages = sorted({lang for image in images for lang in image.captions})
    if me.lead:
        print(f"{len(images)} images, {sum(len(c) for i in images for c in i.captions.values())} captions "
              f"in {', '.join(languages)}; training on {me.device.type}"
              + (f" in {me.world} processes" if me.world > 1 else ""))
    built = build(cfg, images, cfg.out)
    budget = cfg.model.naflex_budget
    naflex = NaFlexTransform(SIZES[cfg.model.size]["patch_size"], budget) if budget else None
    data = CaptionPairs(images, photos, built.preprocess_cfg, built.tokenizer, cfg.language_weights, built.pad_id,
                        *built.locked, flip=cfg.flip, naflex=naflex)
    if data.missing and me.lead:
        print(f"warning: {data.missing} captioned images have no file in {cfg.images}; skipped")
    val = None
    if cfg.val_captions and me.lead:
        val = CaptionPairs(read_captions(cfg.val_captions, cfg.languages), cfg.val_images or cfg.images,
                           built.preprocess_cfg, built.tokenizer, None, built.pad_id, *built.locked).to(me.device)
    return built, data, val


def _objectives(cfg: TrainConfig, built: Built, data: CaptionPairs) -> SigLIP2Objectives | None:
    """SigLIP 2's extra objectives for a from-scratch ViT (the LocCa decoder is saved with every checkpoint),
    or None when none is switched on."""
    scratch = cfg.model
    if not scratch.siglip2:
        return None
    visual = built.model.visual
    examples = locca_examples(built.tokenizer, data.texts, data.caption_image, data.caption_language, data.keys,
                              visual.conv1.out_channels, scratch.instances) if scratch.locca else None
    distill = SelfDistillConfig(scratch.ema_momentum, scratch.local_crops, mask_ratio=scratch.mask_ratio)
    weights = ObjectiveWeights(scratch.locca, scratch.silc, scratch.tips, scratch.distill_from)
    objectives = SigLIP2Objectives(weights, visual, examples, distill)
    built.decoder = objectives.decoder
    return objectives


def _forward(cfg: TrainConfig, model: nn.Module, data: CaptionPairs, objectives: SigLIP2Objectives | None,
             me: _Process) -> nn.Module:
    """A step's forward (towers, loss, SigLIP 2's terms), wrapped for DistributedDataParallel under torchrun."""
    loss_fn = make_loss(cfg.loss, chunk=cfg.chunk, distributed=me.world > 1)
    forward = _Step(_Embed(model, data.images_cached, data.texts_cached), loss_fn, objectives, cfg.bf16)
    if me.world > 1:  # SigLIP 2's heads sit out the steps before SILC/TIPS switch on: DDP must look for them
        forward = DistributedDataParallel(forward, device_ids=[me.device.index] if me.device.type == "cuda" else None,
                                          find_unused_parameters=objectives is not None)
    return forward


def _progress(cfg: TrainConfig, step: int, elapsed: float, me: _Process) -> float:
    """The share of the run done, by steps or by time, whichever is further (1.0: the run is over)."""
    progress = max(step / cfg.steps if cfg.steps else 0.0, elapsed / cfg.budget_s)
    if me.world > 1:  # all processes must take the same steps: the lead's clock decides
        tensor = torch.tensor([progress], dtype=torch.float64, device=me.device)
        dist.broadcast(tensor, src=0)
        progress = float(tensor)
    return progress


def _evaluate(cfg: TrainConfig, me: _Process, built: Built, val: CaptionPairs | None, log: "_Log", step: int) -> None:
    """Validation recall on the in-memory model (the lead's `val`), and each `--eval` command of `python -m
    eval` on the checkpoint, written now (train.evals)."""
    if val is not None:
        log.validation(built.model, val, step)
    if cfg.evals and me.lead:
        built.save(cfg.out)
        for command in cfg.evals:
            log.evaluation(command, run_eval(command, cfg.out), step)


def _accumulate(cfg: TrainConfig, me: _Process, data: CaptionPairs, forward: nn.Module,
                objectives: SigLIP2Objectives | None, batch_size: int, order: list[int], progress: float,
                native: bool) -> tuple[torch.Tensor, dict, list[int]]:
    """One optimiser step's gradients, summed over `cfg.accum_steps` micro-batches of `batch_size` (this process
    trains on its share of each); returns the last micro-batch's loss and terms, and the draw order left."""
    for micro in range(cfg.accum_steps):
        indices, order = _next_batch(order, len(data), batch_size, me.rng)
        image_input, text_input = data.batch(indices, me.rng, native=native)
        mine = slice(me.rank * batch_size // me.world, (me.rank + 1) * batch_size // me.world)  # my rows
        last = micro == cfg.accum_steps - 1  # DDP averages gradients once, after the last micro-batch
        with forward.no_sync() if me.world > 1 and not last else contextlib.nullcontext():
            loss, terms = forward(image_input, text_input, mine, indices, progress)
            total = loss + objectives.total(terms) if terms else loss
            (total / cfg.accum_steps).backward()
    return loss, terms, order


def _end(cfg: TrainConfig, me: _Process, built: Built, val: CaptionPairs | None, log: "_Log", step: int,
         elapsed: float, stopped: tuple | None) -> None:
    """The end of a run: the checkpoint, and either what resumes it (`stopped`: the run left early; its model,
    optimiser, objectives and draw order) or its last validation."""
    log.bar.close()
    if me.world > 1:
        dist.destroy_process_group()
    if not me.lead:
        return
    built.save(cfg.out)
    if stopped is not None:
        model, optimizer, objectives, order = stopped
        _save_resume(cfg.out, model, optimizer, objectives, me, step, elapsed, order)
        print(f"stopped at step {step}; continue with: python -m train --resume {cfg.out}")
    else:
        (cfg.out / RESUME_FILE).unlink(missing_ok=True)
        if not (cfg.eval_every and step % cfg.eval_every == 0):  # not just evaluated
            _evaluate(cfg, me, built, val, log, step)
    log.close(step, elapsed)


def _next_batch(order: list[int], count: int, batch_size: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """(the next batch's image indices, the rest of the epoch); a new epoch takes every image once, shuffled."""
    if len(order) < batch_size:
        order = list(range(count))
        rng.shuffle(order)
    return order[:batch_size], order[batch_size:]


def _init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, else a single process (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # NCCL between GPUs, gloo on CPUs
    return dist.get_rank(), dist.get_world_size()


@contextlib.contextmanager
def _lead_first(me: _Process):
    """Run the block in the lead process first, then in the others (they reuse what it wrote to disk)."""
    if me.rank > 0:
        dist.barrier()
    yield
    if me.rank == 0 and me.world > 1:
        dist.barrier()


class _Log:
    """The run's record: metrics.jsonl and a progress bar, written by the lead. Under torchrun each process
    holds its share of the logged loss; every process joins the averaging, so the lead logs the batch's."""

    def __init__(self, cfg: TrainConfig, me: _Process, resume: bool, step: int, pairs_per_step: int):
        self.cfg, self.me, self.pairs_per_step = cfg, me, pairs_per_step
        self.metrics = open(cfg.out / "metrics.jsonl", "a" if resume else "w", encoding="utf-8") if me.lead else None
        self.bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="training", disable=not me.lead)

    def step(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor], model: nn.Module, lr: float,
             native: bool, elapsed: float) -> None:
        self.bar.update(1)
        if step % self.cfg.log_every:
            return
        if self.me.world > 1:
            loss, *values = (value.detach().clone() for value in (loss, *terms.values()))
            for value in (loss, *values):
                dist.all_reduce(value)
                value /= self.me.world
            terms = dict(zip(terms, values, strict=True))
        if not self.me.lead:
            return
        row = {"step": step, "loss": round(loss.item(), 5), "t": round(model.logit_scale.exp().item(), 4),
               "b": round(model.logit_bias.item(), 4) if model.logit_bias is not None else None,
               "lr": round(lr, 8), "pairs_per_s": round(step * self.pairs_per_step / max(elapsed, 1e-9), 1),
               "elapsed_s": round(elapsed, 1), **({"naflex": native} if self.cfg.model.naflex_budget else {}),
               **{name: round(value.item(), 5) for name, value in terms.items()}}
        self._write(row)
        postfix = {"loss": row["loss"], "t": row["t"], "b": row["b"], "pairs_s": row["pairs_per_s"]}
        if self.cfg.budget_s < math.inf:
            postfix["left"] = f"{max(self.cfg.budget_s - elapsed, 0) / 60:.1f}min"
        self.bar.set_postfix(postfix)

    def validation(self, model: nn.Module, val: CaptionPairs, step: int) -> None:
        result = validate(model, val)
        self._write({"step": step, "val": result["mean"], "val_languages": result["languages"]})
        mean = result["mean"]
        tqdm.write(f"step {step}: val T->I R@1/5/10 {mean['t2i_r1']:.1f}/{mean['t2i_r5']:.1f}/{mean['t2i_r10']:.1f}, "
                   f"I->T {mean['i2t_r1']:.1f}/{mean['i2t_r5']:.1f}/{mean['i2t_r10']:.1f}")

    def evaluation(self, command: str, result: dict, step: int) -> None:
        self._write({"step": step, "eval": command, "result": result})
        tqdm.write(f"step {step}: eval {command}: {json.dumps(result)[:200]}")

    def close(self, step: int, elapsed: float) -> None:
        self.metrics.close()
        plot_training(self.cfg.out / "metrics.jsonl", self.cfg.out / "training.png")
        print(f"trained {step} steps ({step * self.pairs_per_step} pairs) in {elapsed:.0f} s; "
              f"checkpoint in {self.cfg.out}")

    def _write(self, row: dict) -> None:
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()


class _Embed(nn.Module):
    """The trained part of the towers: inputs -> unit-norm embeddings (a locked trunk's cached features go
    through the head only)."""

    def __init__(self, model: nn.Module, images_cached: bool, texts_cached: bool):
        super().__init__()
        self.model, self.images_cached, self.texts_cached = model, images_cached, texts_cached

    def images(self, inputs: ImageBatch) -> torch.Tensor:
        if isinstance(inputs, NaFlexBatch):  # images at their own patch grids
            return F.normalize(naflex_forward(self.model.visual, inputs)[0], dim=-1)
        features = self.model.image_head(inputs) if self.images_cached else self.model.encode_image(inputs)
        return F.normalize(features, dim=-1)

    def texts(self, inputs: torch.Tensor) -> torch.Tensor:
        features = self.model.text_head(inputs) if self.texts_cached else self.model.encode_text(inputs)
        return F.normalize(features, dim=-1)


class _Step(nn.Module):
    """A training step's forward: this process's rows through the towers, the sigmoid loss (across processes
    under torchrun) and SigLIP 2's terms. DistributedDataParallel wraps this module, so every weight a term
    reaches (t and b, the decoder, the self-distillation heads) has its gradient averaged over processes."""

    def __init__(self, embed: _Embed, loss_fn, objectives: SigLIP2Objectives | None, bf16: bool):
        super().__init__()
        self.embed, self.loss_fn, self.objectives, self.bf16 = embed, loss_fn, objectives, bf16

    def forward(self, images: ImageBatch, texts: torch.Tensor, rows: slice,
                indices: list[int], progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, SigLIP 2's unweighted terms) for the rows `rows` of the global batch `images`, `texts`."""
        model = self.embed.model
        with torch.autocast(texts.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            terms = {}
            if self.objectives is None:
                image_features = self.embed.images(images[rows])
            else:  # SigLIP 2's decoder reads the patch tokens the pooled embedding comes from
                pooled, tokens, valid = vit_tokens(model.visual, images[rows])
                image_features = F.normalize(pooled, dim=-1)
                terms = self.objectives.losses(model.visual, images, rows, tokens, valid, indices, progress)
            text_features = self.embed.texts(texts[rows])
        loss = self.loss_fn(image_features.float(), text_features.float(), model.logit_scale, model.logit_bias)
        return loss, terms


def _save_resume(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, objectives: nn.Module | None,
                 me: _Process, step: int, elapsed: float, order: list[int]) -> None:
    """Everything that decides the rest of the run, written atomically beside the checkpoint."""
    trained = trained_state(model) if isinstance(model, TwoTowers) else model.state_dict()
    state = {"model": trained, "optimizer": optimizer.state_dict(), "step": step,
             "elapsed": elapsed, "order": order, "python_rng": me.rng.getstate(), "torch_rng": torch.get_rng_state()}
    if objectives is not None:
        state["objectives"] = objectives.state_dict()
    if me.device.type == "cuda":  # dropout on the GPU draws from the GPU's generator
        state["cuda_rng"] = torch.cuda.get_rng_state(me.device)
    atomic_write(out / RESUME_FILE, lambda tmp: torch.save(state, tmp))


def _load_resume(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, objectives: nn.Module | None,
                 me: _Process) -> tuple[int, float, list[int]]:
    """(step, elapsed seconds, the rest of the epoch's order) of a stopped run, its state restored."""
    # Tensors and plain containers only, read onto the CPU (the optimiser moves its state to the parameters).
    state = torch.load(out / RESUME_FILE, weights_only=True, map_location="cpu")
    model.load_state_dict(state["model"], strict=False)
    if objectives is not None:
        objectives.load_state_dict(state["objectives"])
    optimizer.load_state_dict(state["optimizer"])
    version, internal, gauss = state["python_rng"]
    me.rng.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch_rng"])
    if me.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], me.device)
    return state["step"], state["elapsed"], list(state["order"])
