"""Two-path training (paper, Sec. 3.2, Eq. for L = L_CE + L_KL): CE on the speech path's
response tokens plus KL(text ‖ speech) at temperature 2 over response positions, the text
path a frozen teacher. The direction is the authors' code's,
`kl_div(log_softmax(speech / T), softmax(text / T))`; their code has no T² factor, so it is
an option here (`kl_t2_scale`). When a sample carries an `affect_hint` (the spoken corpus),
the teacher reads it at the end of its prompt and the student does not: the speech path must
hear how the person sounds.

Trainable: dual-level attention, adapter, cross-modal attention, PLoRA. Frozen: Whisper
and the LLM base. A later stage starts from a checkpoint (`init_from`), may train some parts
only (`train_only`) and may add the affect pairs (es4r/training/affect_pairs.py, `affect_pair_weight`).
The loss itself is in losses.py. Runs under Hugging Face Accelerate, so `accelerate launch` makes the same
command data-parallel on several GPUs, machines or CPU processes."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from es4r.config import TrainConfig
from es4r.data.manifest import ManifestDataset, PreparedSample, collate, load_manifest
from es4r.training.affect_pairs import PairSampler, affect_pair_loss, held_out_margin
from es4r.training.losses import AffectHead, SpeechAnchor, TeacherCache, TwoPathLoss, two_path_loss
from es4r.training.reader_fit import fit_affect_reader

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"


@contextmanager
def _trainable_in_eval_mode(model):
    """Dropout off in the ES4R modules for a measurement; their training mode restored after."""
    modules = list(model.trainable_modules().values())
    modes = [m.training for m in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


def _mean_off_diagonal_cosine(vectors: torch.Tensor) -> float:
    unit = F.normalize(vectors.float(), dim=-1)
    cos = unit @ unit.T
    n = cos.shape[0]
    return float((cos.sum() - cos.diagonal().sum()) / max(n * (n - 1), 1))


def _diversity(per_dialogue: list[torch.Tensor]) -> dict[str, float]:
    """How much the adapter's speech vectors depend on the input: mean cosine between the
    positions of one dialogue, and between dialogues' mean vectors. Both near 1 means the
    speech path has become a constant soft prompt that ignores the audio (the failure seen
    on the CPU run: 0.30 -> 0.89 within 25 steps), which no loss curve shows."""
    within = [_mean_off_diagonal_cosine(vectors) for vectors in per_dialogue]
    means = torch.stack([vectors.mean(0) for vectors in per_dialogue])
    return {"speech_cos_within": sum(within) / len(within),
            "speech_cos_between": _mean_off_diagonal_cosine(means) if len(per_dialogue) > 1 else 1.0}


@torch.no_grad()
def speech_diversity(model, samples: list[PreparedSample]) -> dict[str, float]:
    """`_diversity` of the speech vectors the model makes for these samples."""
    with _trainable_in_eval_mode(model):
        per_dialogue = []
        for item in samples:
            encoding = model.encode_speech([item.features])
            per_dialogue.append(encoding.embeddings[0, : int(encoding.lengths[0])])
        return _diversity(per_dialogue)


@torch.no_grad()
def held_out_report(model, samples: list[PreparedSample], batch_size: int, temperature: float,
                    cache: TeacherCache | None = None) -> dict[str, float]:
    """One pass over held-out samples: speech-path CE and KL (token-weighted means) and the
    diversity of the speech vectors that pass computed."""
    ce_sum = kl_sum = tokens = 0.0
    per_dialogue: list[torch.Tensor] = []
    with _trainable_in_eval_mode(model):
        for start in range(0, len(samples), batch_size):
            result = two_path_loss(model, samples[start : start + batch_size], temperature, cache=cache)
            ce_sum += float(result.ce) * result.response_tokens
            kl_sum += float(result.kl) * result.response_tokens
            tokens += result.response_tokens
            per_dialogue += result.speech
    return {"val_ce": ce_sum / max(tokens, 1), "val_kl": kl_sum / max(tokens, 1), **_diversity(per_dialogue)}


def trainable_parameters(model, only: tuple[str, ...] = ()) -> list[torch.nn.Parameter]:
    """The ES4R parts and PLoRA; with `only` (TrainConfig.train_only), just the parameters whose
    names in the model (e.g. "cross.cue.weight") start with one of those prefixes."""
    params = [p for m in model.trainable_modules().values() for n, p in m.named_parameters()
              if not n.startswith("reader.")]  # the affect reader is fitted on its own (reader_fit.py)
    params += [p for n, p in model.llm.named_parameters() if "lora_" in n]
    if only:
        chosen = {id(p) for n, p in model.named_parameters() if n.startswith(tuple(only))}
        params = [p for p in params if id(p) in chosen]
    return params


def restrict_training(model, only: tuple[str, ...]) -> None:
    """A stage that trains some parts only: every other ES4R/PLoRA parameter is frozen."""
    if not only:
        return
    keep = {id(p) for p in trainable_parameters(model, only)}
    if not keep:
        raise ValueError(f"train_only {list(only)} matches no trainable parameter of the model")
    for param in trainable_parameters(model):
        param.requires_grad_(id(param) in keep)


def parameter_groups(model, config: TrainConfig, head: list[torch.nn.Parameter]) -> list[dict]:
    """AdamW groups: the gates of the cross-modal block (es4r/modeling/cross_modal.py) start closed at 0 and move by
    about lr per step, so at lr 2e-4 they could open to only ~0.04 in a 180-step CPU run;
    `gate_lr_scale` lets them open within the run, and they get no weight decay (it would
    pull them shut). The AffectHead (`head`) has a group of its own, `affect_head_lr_scale` x lr
    (at 1, the default, it trains exactly as in the main group). Tried at 25 to let the head,
    not the speech vectors S, do the scaling: S spread sooner instead, since the push the loss
    gives S is the head's weights times its error (assets/TRAINING_CPU.md, "A faster AffectHead
    spreads the vectors sooner")."""
    chosen = {id(p) for p in trainable_parameters(model, config.train_only)}
    gates = [p for n, p in model.cross.named_parameters() if n.endswith("gate") and id(p) in chosen]
    gate_ids = {id(p) for p in gates}
    rest = [p for p in trainable_parameters(model, config.train_only) if id(p) not in gate_ids]
    groups = [{"params": rest, "lr": config.lr, "weight_decay": config.weight_decay}] if rest else []
    if gates:
        groups.append({"params": gates, "lr": config.lr * config.gate_lr_scale, "weight_decay": 0.0})
    if head:
        groups.append({"params": head, "lr": config.lr * config.affect_head_lr_scale,
                       "weight_decay": config.weight_decay})
    return groups


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Wrapper(torch.nn.Module):
    """What Accelerate/DDP wraps: the trainable modules, and a forward that is the loss."""

    def __init__(self, model, config: TrainConfig, pairs: PairSampler | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.cache = TeacherCache() if config.cache_teacher else None
        self.affect_head = AffectHead(model.llm.get_input_embeddings().weight.shape[1]) \
            if config.affect_loss_weight > 0 and config.two_path_weight > 0 else None
        self.pairs = pairs
        self.anchor = SpeechAnchor(model) if config.speech_anchor_weight > 0 and config.two_path_weight > 0 else None

    def forward(self, batch: list[PreparedSample]) -> TwoPathLoss:
        """two_path_weight x (CE + KL [+ affect]) [+ speech_anchor_weight x anchor] on the
        batch + affect_pair_weight x one drawn pair."""
        result = None
        if self.config.two_path_weight > 0:
            result = two_path_loss(self.model, batch, self.config.kl_temperature, self.config.kl_t2_scale,
                                   self.cache, self.affect_head, self.config.affect_loss_weight)
            result = replace(result, loss=self.config.two_path_weight * result.loss)
            if self.anchor is not None:
                change = self.anchor(batch, result.speech)
                result = replace(result, loss=result.loss + self.config.speech_anchor_weight * change,
                                 anchor=change.detach())
        if self.pairs is None:
            return result
        pair = affect_pair_loss(self.model, *self.pairs.draw())
        loss = self.config.affect_pair_weight * pair.loss
        if result is None:
            zero = pair.ce.new_zeros(())
            return TwoPathLoss(loss, pair.ce, zero, pair.response_tokens, [], None, pair.margin)
        return replace(result, loss=result.loss + loss, pair_margin=pair.margin)


def learning_rate_factor(step: int, config: TrainConfig, total_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio` (or constant)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - config.warmup_steps) / max(total_steps - config.warmup_steps, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def set_plora_trainable(model, trainable: bool, only: tuple[str, ...] = ()) -> None:
    """Staged training: PLoRA frozen while the ES4R modules learn to build S' first."""
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(trainable and (not only or name.startswith(tuple(only))))


def make_accelerator(config: TrainConfig):
    """bf16 autocast on a GPU (the paper's setting); on a CPU full precision, or bf16 autocast
    with `cpu_bf16` (said in the log, with a warning where the CPU has no bf16 matrix units)."""
    from accelerate import Accelerator

    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu or config.cpu_bf16
    if config.cpu_bf16 and not on_gpu:
        supported = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        logger.log(logging.INFO if supported else logging.WARNING, "training on the CPU in bf16 autocast%s",
                   "" if supported else ": this CPU has no bf16 matrix units, so it may be slower than fp32")
    return Accelerator(gradient_accumulation_steps=config.grad_accum, cpu=not on_gpu,
                       mixed_precision="bf16" if bf16 else "no")


def train(config: TrainConfig, model=None, build_model=None) -> Path:
    """Train and write checkpoints to config.output_dir; resumes from its trainer state.
    Returns the folder of the final ES4R checkpoint. `model`: the ES4R model to train; or
    `build_model(preset)` makes it here, in each process (the train command passes
    es4r.presets.untrained_model), so training depends on no layer above it."""
    from tqdm.auto import tqdm

    from es4r.training.checkpoint import load_es4r_parts, save_es4r_parts

    seed_everything(config.seed)
    accelerator = make_accelerator(config)
    if model is None:
        if build_model is None:
            raise ValueError("train() needs a model, or build_model to make one from config.preset")
        model = build_model(config.preset)
    if config.history_layout and config.history_layout != model.config.cross.history_layout:
        model = model.with_config(model.config.replace(
            cross=replace(model.config.cross, history_layout=config.history_layout)))
        logger.info("speech path history layout: %s", config.history_layout)
    if config.init_from:
        load_es4r_parts(model, config.init_from, strict=False)
    restrict_training(model, config.train_only)
    model.train()
    for module in (model.whisper.model, model.llm):
        module.eval()  # frozen backbones stay in eval mode (no dropout)
    output = Path(config.output_dir)
    samples = load_manifest(config.manifest)
    pairs = PairSampler(samples, model.whisper.n_mels, config.seed) if config.affect_pair_weight > 0 else None
    dataset = ManifestDataset(samples, model.whisper.n_mels)
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                         collate_fn=collate, generator=generator, num_workers=config.num_workers)
    val_samples = val_rows = None
    if config.val_manifest:
        val_rows = load_manifest(config.val_manifest)[: config.val_limit]
        val_set = ManifestDataset(val_rows, model.whisper.n_mels)
        val_samples = [val_set[i] for i in range(len(val_set))]
    if config.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule {config.lr_schedule!r}: choose cosine or constant")
    wrapper = _Wrapper(model, config, pairs)
    head = list(wrapper.affect_head.parameters()) if wrapper.affect_head is not None else []
    optimizer = torch.optim.AdamW(parameter_groups(model, config, head), lr=config.lr, weight_decay=config.weight_decay)
    wrapper, optimizer, loader = accelerator.prepare(wrapper, optimizer, loader)
    val_cache = TeacherCache() if config.cache_teacher else None

    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    step, start_epoch = 0, 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda index: learning_rate_factor(index, config, total_steps))
    state_path = output / "last" / STATE_FILE
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        load_es4r_parts(model, output / "last")
        optimizer.load_state_dict(state["optimizer"])
        step, start_epoch = state["step"], state["epoch"]
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed from %s at step %d", output / "last", step)

    def save(folder: Path, epoch: int, resumable: bool = True) -> None:
        if accelerator.is_main_process:
            save_es4r_parts(model, folder, {"train_config": asdict(config), "step": step})
            if resumable:  # optimizer + RNG state, twice the size of the parts; last/ only
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "step": step, "epoch": epoch,
                            "torch_rng": torch.get_rng_state()}, folder / STATE_FILE)

    def keep(at_step: int) -> None:
        """A permanent snapshot (parts only) and, with a val manifest, its held-out loss."""
        if not accelerator.is_main_process:
            return
        save_es4r_parts(model, output / f"step-{at_step:06d}", {"train_config": asdict(config), "step": at_step})
        if val_samples:
            with accelerator.autocast():  # the same precision as the training forward (bf16 on GPU)
                record = {"step": at_step,
                          **held_out_report(model, val_samples, config.batch_size, config.kl_temperature, val_cache)}
                if pairs is not None:  # does the speech path prefer the reply matching what it heard?
                    with _trainable_in_eval_mode(model):
                        record.update(held_out_margin(model, val_rows, model.whisper.n_mels))
            log.write(json.dumps(record) + "\n")
            log.flush()
            logger.info("step %d: held-out speech-path CE %.3f, KL %.3f; speech-vector cosine within %.2f, "
                        "between dialogues %.2f%s", at_step, record["val_ce"], record["val_kl"],
                        record["speech_cos_within"], record["speech_cos_between"],
                        f"; affect margin {record['affect_margin']:.2f} nats, positive in "
                        f"{record['affect_margin_positive']:.0%}" if "affect_margin" in record else "")

    output.mkdir(parents=True, exist_ok=True)
    log = (output / LOG_FILE).open("a")
    reader = getattr(model.cross, "reader", None)
    fits_reader = not config.train_only or any("cross.reader".startswith(p) or p.startswith("cross.reader")
                                                for p in config.train_only)
    if reader is not None and not bool(reader.fitted) and fits_reader:  # before step 0: the speech path trains with its notes
        fitted = fit_affect_reader(reader, [dataset[i] for i in range(len(dataset))], val_samples, config.seed)
        if fitted is not None:
            log.write(json.dumps({"step": step, "affect_reader": fitted}) + "\n")
    if config.keep_every and step == 0:
        keep(0)  # the untrained parts: the baseline every later snapshot is compared with
    bar = tqdm(total=total_steps, initial=step, disable=not accelerator.is_main_process, desc="training")
    started, tokens_seen = time.perf_counter(), 0
    for epoch in range(start_epoch, config.epochs):
        skip = step * config.grad_accum - epoch * len(loader) if epoch == start_epoch else 0
        for index, batch in enumerate(loader):
            if index < skip:
                continue
            set_plora_trainable(model, step >= config.plora_start_step, config.train_only)
            with accelerator.accumulate(wrapper):
                result = wrapper(batch)
                accelerator.backward(result.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable_parameters(model, config.train_only), config.grad_clip)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            tokens_seen += result.response_tokens
            if not accelerator.sync_gradients:
                continue
            step += 1
            elapsed = time.perf_counter() - started
            record = {"step": step, "epoch": epoch, "loss": float(result.loss.detach()), "ce": float(result.ce),
                      "kl": float(result.kl), "lr": scheduler.get_last_lr()[0],
                      **({"affect": float(result.affect)} if result.affect is not None else {}),
                      **({"pair_margin": float(result.pair_margin)} if result.pair_margin is not None else {}),
                      **({"anchor": float(result.anchor)} if result.anchor is not None else {}),
                      "tokens_per_s": tokens_seen / max(elapsed, 1e-9),
                      "elapsed_s": elapsed}
            if accelerator.is_main_process and step % config.log_every == 0:
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{record['loss']:.3f}", kl=f"{record['kl']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            bar.update(1)
            if step % config.save_every == 0:
                save(output / "last", epoch)
            if config.keep_every and step % config.keep_every == 0:
                keep(step)
            if step >= total_steps:
                break
        if step >= total_steps:
            break
    if config.keep_every and step % config.keep_every:
        keep(step)
    bar.close()
    log.close()
    accelerator.wait_for_everyone()
    save(output / "last", config.epochs)
    save(output / "final", config.epochs, resumable=False)
    return output / "final"
