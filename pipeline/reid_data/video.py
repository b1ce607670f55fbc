"""Torch datasets over tracklets: training clips (one random clip per item) and test clips (dense/evenly)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.reid_data.datasets import Tracklet
from pipeline.reid_data.sampling import dense_clips, sample_evenly, sample_train_indices
from pipeline.reid_data.transforms import ClipTransform, load_image


class TrainClips(Dataset):
    """Item i -> (clip (T,3,H,W), pid, action (1-based, 0 unlabelled), erased (T,) bool)."""

    def __init__(self, tracklets: list[Tracklet], seq_len: int, transform: ClipTransform,
                 sampling: str = "restricted_random") -> None:
        self.tracklets, self.seq_len, self.transform, self.sampling = tracklets, seq_len, transform, sampling

    def __len__(self) -> int:
        return len(self.tracklets)

    def __getitem__(self, i: int):
        t = self.tracklets[i]
        idx = sample_train_indices(len(t), self.seq_len, self.sampling, random)
        clip, erased = self.transform([load_image(t.paths[j]) for j in idx])
        return torch.from_numpy(clip), t.pid, t.action, torch.from_numpy(erased)


class TestClips(Dataset):
    """Flattened (tracklet, clip) pairs: item -> (clip (T,3,H,W), tracklet index)."""

    def __init__(self, tracklets: list[Tracklet], seq_len: int, transform: ClipTransform, sampling: str = "dense",
                 max_clips: int | None = None, clip_select: str = "evenly") -> None:
        self.items: list[tuple[int, list[int]]] = []
        for ti, t in enumerate(tracklets):
            if sampling == "dense":
                clips = dense_clips(len(t), seq_len, max_clips, clip_select)
            else:
                clips = [sample_evenly(len(t), seq_len)]
            self.items.extend((ti, c) for c in clips)
        self.tracklets, self.transform = tracklets, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        ti, idx = self.items[i]
        paths = self.tracklets[ti].paths
        loaded = {j: load_image(paths[j]) for j in set(idx)}
        clip, _ = self.transform([loaded[j] for j in idx])
        return torch.from_numpy(clip), ti


@torch.no_grad()
def extract_tracklet_features(model, tracklets: list[Tracklet], seq_len: int, size: tuple[int, int],
                              sampling: str = "dense", max_clips: int | None = None, batch_size: int = 16,
                              num_workers: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                              clip_select: str = "evenly", resize: str = "bilinear"):
    """Tracklet features = mean of its clips' embeddings (re-normalised when the model's `normalize_embedding` is
    set); action scores = mean of its clips' probabilities. `max_clips` / `clip_select`: see `dense_clips`;
    `resize`: "bilinear" or "bicubic" interpolation to `size`.

    Returns (features (N, D) float32 tensor, action_probs (N, A) tensor)."""
    from torch.utils.data import DataLoader

    ds = TestClips(tracklets, seq_len, ClipTransform(size, train=False, resize=resize), sampling, max_clips, clip_select)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    model.eval()
    feats = acts = None
    counts = torch.zeros(len(tracklets))
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="features", unit="batch", leave=False)
    for clips, tis in it:
        out = model(clips.to(device))
        emb, prob = out.embedding.float().cpu(), out.action_probs.float().cpu()
        if feats is None:
            feats = torch.zeros(len(tracklets), emb.shape[1])
            acts = torch.zeros(len(tracklets), prob.shape[1])
        feats.index_add_(0, tis, emb)
        acts.index_add_(0, tis, prob)
        counts.index_add_(0, tis, torch.ones(len(tis)))
    if feats is None:
        return torch.zeros(0, 0), torch.zeros(0, 0)
    counts = counts.clamp_min(1).unsqueeze(1)
    feats = feats / counts
    if getattr(model, "normalize_embedding", False):  # cosine retrieval: unit tracklet features
        feats = torch.nn.functional.normalize(feats, dim=1)
    return feats, acts / counts


def collate_train(batch):
    clips, pids, actions, erased = zip(*batch)
    return torch.stack(clips), torch.as_tensor(pids), torch.as_tensor(actions), torch.stack(erased)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
