"""Training and evaluation loops for Re-ID-AR (used by `run_pipeline.py train` / `evaluate reid` and the tests)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.device import resolve_device
from models.reid.config import ReIDTrainingConfig
from models.reid.losses import ReIDARLoss
from models.reid.model import ReIDAR, ReIDARTrainOutput, build_reid_ar, load_checkpoint, save_checkpoint
from pipeline.reid_data.datasets import VideoReIDDataset, load_dataset
from pipeline.reid_data.metrics import action_metrics, euclidean_distances, evaluate_ranking, identity_breakdown

log = logging.getLogger(__name__)


def lr_factor(epoch: int, warmup_epochs: int, warmup_factor: float, milestones: list[int], gamma: float) -> float:
    """Linear warm-up from `warmup_factor` to 1 over `warmup_epochs`, then x gamma at each milestone epoch."""
    if epoch < warmup_epochs:
        return warmup_factor + (1 - warmup_factor) * epoch / warmup_epochs
    return gamma ** sum(epoch >= m for m in milestones)


def _float_output(out: ReIDARTrainOutput) -> ReIDARTrainOutput:
    """The model's training outputs in float32 (the losses run in float32 under AMP)."""
    import dataclasses

    return dataclasses.replace(out, **{f.name: getattr(out, f.name).float() for f in dataclasses.fields(out)
                                       if isinstance(getattr(out, f.name), torch.Tensor)})


def evaluate_model(model: torch.nn.Module, dataset: VideoReIDDataset, seq_len: int, size: tuple[int, int],
                   sampling: str = "dense", max_clips: int | None = None, device="cpu", batch_size: int = 16,
                   num_workers: int = 0, progress: bool = False, clip_select: str = "evenly",
                   resize: str = "bilinear") -> dict[str, Any]:
    """CMC / mAP (MARS rule) of `dataset.query` against `dataset.gallery` (+ action metrics when the model has
    actions). Test clips per `sampling` / `max_clips` / `clip_select` (see `dense_clips`), resized with `resize`."""
    from pipeline.reid_data.video import extract_tracklet_features

    kw = dict(seq_len=seq_len, size=size, sampling=sampling, max_clips=max_clips, batch_size=batch_size,
              num_workers=num_workers, device=device, progress=progress, clip_select=clip_select, resize=resize)
    qf, qa = extract_tracklet_features(model, dataset.query, **kw)
    gf, ga = extract_tracklet_features(model, dataset.gallery, **kw)
    dist = euclidean_distances(qf.numpy().astype(np.float64), gf.numpy().astype(np.float64))
    ids = ([t.pid for t in dataset.query], [t.pid for t in dataset.gallery],
           [t.camid for t in dataset.query], [t.camid for t in dataset.gallery])
    res: dict[str, Any] = evaluate_ranking(dist, *ids)
    res["by_identity"] = identity_breakdown(dist, *ids)
    names = getattr(model, "action_names", [])
    if names and qa.numel():
        # each tracklet once, even when it is both a query and a gallery entry
        seen: dict[str, int] = {}
        tracks = dataset.query + dataset.gallery
        for i, t in enumerate(tracks):
            seen.setdefault(t.key or str(id(t)), i)
        keep = sorted(seen.values())
        probs = torch.cat([qa, ga]).numpy()[keep]
        res["actions"] = action_metrics(probs, np.array([tracks[i].action for i in keep]), names)
    return res


def _freeze(model: ReIDAR, names: list[str]) -> list[torch.nn.Module]:
    """Stop the gradients of the named backbone submodules (`conv1`, `layer2.0`; onnx_frame: its `freeze_modules`
    names); returns the modules (kept in eval mode while training). One-line error naming the valid names."""
    frozen = []
    backbone = model.backbone
    for name in names:
        if hasattr(backbone, "freeze_modules"):
            modules = backbone.freeze_modules(name)
        else:
            try:
                modules = [backbone.get_submodule(name)]
            except AttributeError:
                modules = []
        if not modules:
            valid = (backbone.freeze_names_hint() if hasattr(backbone, "freeze_names_hint")
                     else ", ".join(n for n, _ in backbone.named_children()))
            raise ValueError(f"model.freeze: backbone {model.backbone_name} has no submodule {name!r}; valid: {valid}")
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(False)
        frozen.extend(modules)
    return frozen


def build_objective(cfg: ReIDTrainingConfig, model: ReIDAR, num_classes: int, device: torch.device):
    """The config's losses (`ReIDARLoss`, on `device`), the Adam optimiser of the model's trainable parameters and the
    SGD optimiser of the loss's centres: (criterion, optimizer, center_opt)."""
    lc, tc = cfg.loss, cfg.train
    criterion = ReIDARLoss(num_classes, model.feature_dim, model.num_actions, cfg.model.action_hidden,
                           lc.label_smooth, lc.ranked_margin, lc.ranked_alpha, lc.ranked_t, lc.ranked_normalize,
                           lc.w_id, lc.w_ranked, lc.w_center, lc.w_attention, lc.w_action, lc.w_action_center,
                           ranked_feature=lc.ranked_feature, center_feature=lc.center_feature,
                           attention_form=lc.attention_form, smooth_classes=lc.label_smooth_classes,
                           ranked_positive_norm=lc.ranked_positive_norm,
                           ranked_weight_grad=lc.ranked_weight_grad).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay)
    center_params = [criterion.center.centers, criterion.action_center.center.centers]
    center_opt = torch.optim.SGD(center_params, lr=tc.center_lr)
    return criterion, optimizer, center_opt


def optimisation_step(model, criterion, optimizer, center_opt, scaler, clips, pids, acts, erased, w_center: float,
                      w_action_center: float, use_amp: bool, amp_dtype: torch.dtype = torch.float16):
    """One training step on a batch already on the model's device: clips (B, T, 3, H, W), pids (B,), acts (B,),
    erased (B, T) -> (loss tensor, loss terms dict, model output). Forward under autocast (amp_dtype) when use_amp,
    losses in float32, gradients through `scaler` (a disabled GradScaler when not scaling), the centres' gradients
    rescaled so that they learn at their own rate whatever their loss weight."""
    with torch.autocast(device_type=clips.device.type, dtype=amp_dtype, enabled=use_amp):
        out = model(clips)
    if use_amp:
        out = _float_output(out)
    loss, terms = criterion(out, pids, acts, erased)
    optimizer.zero_grad(set_to_none=True)
    center_opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.unscale_(center_opt)
    for p, w in ((criterion.center.centers, w_center), (criterion.action_center.center.centers, w_action_center)):
        if p.grad is not None and w > 0:
            p.grad.mul_(1.0 / w)  # centers learn at center_lr independent of the loss weight
    scaler.step(center_opt)
    scaler.update()
    return loss, terms, out


def train(cfg: ReIDTrainingConfig, output: str | Path, resume: str | Path | None = None, progress: bool = True,
          dataset: VideoReIDDataset | None = None) -> dict[str, Any]:
    """Train per `cfg`; writes `<output>/checkpoint_epXXX.pth`, `<output>/model_final.pth`, `<output>/log.jsonl`.
    Returns a summary dict (final loss averages, checkpoint path, optional evaluation)."""
    from torch.utils.data import DataLoader

    from pipeline.reid_data.sampling import RandomIdentitySampler
    from pipeline.reid_data.transforms import ClipAugment, ClipTransform
    from pipeline.reid_data.video import TrainClips, collate_train, set_seed

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tc, dc = cfg.train, cfg.data
    set_seed(tc.seed)
    device = resolve_device(tc.device)
    ds = dataset if dataset is not None else load_dataset(dc, cfg.actions)
    if not ds.train:
        raise ValueError(f"{dc.root}: no training tracklets")
    actions = list(cfg.actions) or list(ds.action_names)
    num_classes = ds.relabel_train()
    log.info("data: %s; %d actions %s", ds.summary(), len(actions), actions)

    start_epoch = 0
    payload = None
    if resume:
        model, payload = load_checkpoint(resume)
        start_epoch = int(payload["epoch"])
        if model.num_classes != num_classes:
            raise ValueError(f"{resume}: trained for {model.num_classes} identities, this training set has {num_classes}")
    else:
        model = build_reid_ar(cfg, num_classes=num_classes)
        model.action_names = actions if len(actions) == model.num_actions else model.action_names
    model.to(device)
    frozen = _freeze(model, cfg.model.freeze)

    lc = cfg.loss
    criterion, optimizer, center_opt = build_objective(cfg, model, num_classes, device)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, tc.warmup_epochs, tc.warmup_factor, tc.milestones, tc.gamma))
    if payload is not None:
        if payload.get("optimizer"):
            optimizer.load_state_dict(payload["optimizer"])
        if payload.get("scheduler"):
            sched.load_state_dict(payload["scheduler"])
        if payload.get("extra", {}).get("criterion"):
            criterion.load_state_dict(payload["extra"]["criterion"])

    transform = ClipTransform(dc.input_size, train=True, flip_prob=dc.flip_prob, pad=dc.pad, erase_prob=dc.erase_prob,
                              augment=ClipAugment(**dc.augment.model_dump()), spatial=dc.spatial_augment,
                              erase_fill=dc.erase_fill, erase_attempts=dc.erase_attempts, resize=dc.resize)
    train_set = TrainClips(ds.train, dc.seq_len, transform, dc.train_sampling)
    sampler = RandomIdentitySampler([t.pid for t in ds.train], dc.p, dc.k, seed=tc.seed + start_epoch, epoch=dc.epoch)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=dc.num_workers, collate_fn=collate_train,
                        persistent_workers=dc.num_workers > 0)

    def save(epoch: int, name: str) -> Path:
        return save_checkpoint(output / name, model, epoch, optimizer, sched,
                               extra={"criterion": criterion.state_dict()}, train_config=cfg.model_dump(mode="json"))

    use_amp = bool(tc.amp and device.type == "cuda")
    if tc.amp and not use_amp:
        log.warning("train.amp is for CUDA; training on %s in float32", device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    t0 = time.time()
    logf = open(output / "log.jsonl", "a")
    history = []
    epoch = start_epoch
    stop = False
    for epoch in range(start_epoch, tc.epochs):
        model.train()
        for m in frozen:
            m.eval()
        iters = tc.iters_per_epoch or len(sampler)
        sums: dict[str, float] = {}
        n = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=iters, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="it", leave=False)
        data_iter = iter(loader)
        for _ in range(iters):
            try:
                clips, pids, acts, erased = next(data_iter)
            except StopIteration:
                data_iter = iter(loader)
                clips, pids, acts, erased = next(data_iter)
            clips, pids, acts, erased = clips.to(device), pids.to(device), acts.to(device), erased.to(device)
            loss, terms, out = optimisation_step(model, criterion, optimizer, center_opt, scaler, clips, pids, acts,
                                                 erased, lc.w_center, lc.w_action_center, use_amp)
            n += 1
            terms["total"] = float(loss.detach())
            terms["acc"] = float((out.logits.argmax(1) == pids).float().mean())
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums['total'] / n:.3f}", acc=f"{sums['acc'] / n:.2f}")
            if tc.max_minutes and time.time() - t0 > tc.max_minutes * 60:
                stop = True
                break
        if bar is not None:
            bar.close()
        sched.step()
        record = {"epoch": epoch + 1, "iters": n, "lr": optimizer.param_groups[0]["lr"],
                  "time_s": round(time.time() - t0, 1), **{k: v / max(n, 1) for k, v in sums.items()}}
        history.append(record)
        logf.write(json.dumps(record) + "\n")
        logf.flush()
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        if tc.checkpoint_every and (epoch + 1) % tc.checkpoint_every == 0:
            save(epoch + 1, f"checkpoint_ep{epoch + 1:03d}.pth")
        # periodic evaluation: on the validation split when there is one (model selection), else the test split
        eval_ds = ds.validation() if ds.val_query else ds
        if tc.eval_every and (epoch + 1) % tc.eval_every == 0 and eval_ds.query and eval_ds.gallery:
            res = evaluate_model(model, eval_ds, dc.seq_len, dc.input_size, dc.test_sampling, dc.test_max_clips, device,
                                 clip_select=dc.test_clip_select, resize=dc.resize)
            split = "val" if ds.val_query else "eval"
            log.info("epoch %d %s: rank-1 %.4f mAP %.4f", epoch + 1, split, res["rank1"], res["mAP"])
            logf.write(json.dumps({"epoch": epoch + 1, split: res}) + "\n")
        if stop:
            log.warning("stopping after %.1f min (train.max_minutes)", (time.time() - t0) / 60)
            break
    final = save(epoch + 1 if history else start_epoch, "model_final.pth")
    summary = {"checkpoint": str(final), "history": history, "num_classes": num_classes,
               "minutes": (time.time() - t0) / 60}
    if ds.val_query and ds.val_gallery:  # the final model on the validation split
        summary["val"] = evaluate_model(model, ds.validation(), dc.seq_len, dc.input_size, dc.test_sampling,
                                        dc.test_max_clips, device, clip_select=dc.test_clip_select, resize=dc.resize)
        log.info("final val: rank-1 %.4f mAP %.4f", summary["val"]["rank1"], summary["val"]["mAP"])
        logf.write(json.dumps({"epoch": epoch + 1 if history else start_epoch, "val": summary["val"]}) + "\n")
    logf.close()
    return summary
