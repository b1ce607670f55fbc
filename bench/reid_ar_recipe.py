#!/usr/bin/env python3
"""Training recipes side by side on the validation split of configs/reid_ar_osnet_shared.yaml (issue #22).

    python bench/reid_ar_recipe.py --export-root /tmp/reid_export --threads 1 \\
        current=runs/current/model_final.pth official=runs/official/model_final.pth

For each NAME=CHECKPOINT (trained with `data.val_ids`; the held-out people's tracklets time-split into two
pseudo-cameras, see pipeline/reid_data/datasets.py hold_out_validation): rank-1 and mAP on that validation split with
each retrieval embedding (BNNeck `bn` or pooled `global` feature; Euclidean or cosine), test clips resized as the
checkpoint was trained (`data.resize`); the same numbers as `evaluate_model` with that embedding, with one feature
pass per feature kind. The row marked `*` is the checkpoint's own embedding, the one its config
ships. Terrace (the test set) is not evaluated here: use bench/reid_ar_shared.py for the chosen recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

EMBEDDINGS = (("bn", False), ("bn", True), ("global", False), ("global", True))


def clip_embeddings(model, tracklets, seq_len: int, resize: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{kind: (per-clip embeddings (C, D), tracklet index of each clip (C,))} for kind bn / global, one pass each."""
    from torch.utils.data import DataLoader

    from pipeline.reid_data.transforms import ClipTransform
    from pipeline.reid_data.video import TestClips

    ds = TestClips(tracklets, seq_len, ClipTransform(model.input_size, train=False, resize=resize), "dense")
    out = {}
    model.eval()
    for kind in ("bn", "global"):
        model.embedding_kind, model.normalize_embedding = kind, False
        embs, owners = [], []
        with torch.no_grad():
            for clips, tis in DataLoader(ds, batch_size=16, shuffle=False):
                embs.append(model(clips).embedding.float())
                owners.append(tis)
        out[kind] = (torch.cat(embs), torch.cat(owners))
    return out


def tracklet_features(embs: torch.Tensor, owners: torch.Tensor, n: int, cosine: bool) -> torch.Tensor:
    """Mean of each tracklet's clip embeddings (N, D); with `cosine`, clips and tracklets L2-normalised, as
    pipeline/reid_data/video.py extract_tracklet_features does for a model with normalize_embedding."""
    if cosine:
        embs = torch.nn.functional.normalize(embs, dim=1)
    feats = torch.zeros(n, embs.shape[1]).index_add_(0, owners, embs)
    feats = feats / torch.bincount(owners, minlength=n).clamp_min(1).unsqueeze(1)
    return torch.nn.functional.normalize(feats, dim=1) if cosine else feats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="NAME=CHECKPOINT pairs")
    ap.add_argument("--export-root", default="/tmp/reid_export", help="folder with train/ (bench/reid_ar_shared.py)")
    ap.add_argument("--seq-len", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.reid_ar_shared import validation_dataset
    from models.reid.backbones import read_torch_file
    from models.reid.model import load_checkpoint
    from pipeline.reid_data.metrics import euclidean_distances, evaluate_ranking

    results: dict[str, dict] = {}
    print(f"{'recipe':<16s}{'embedding':<16s}{'rank-1':>8s}{'mAP':>8s}")
    for item in args.checkpoints:
        name, _, path = item.partition("=")
        if not path:
            print(f"error: {item!r}: expected NAME=CHECKPOINT", file=sys.stderr)
            return 2
        data = (read_torch_file(path).get("train_config") or {}).get("data") or {}
        if not data.get("val_ids"):
            print(f"error: {path}: trained without data.val_ids, no validation split", file=sys.stderr)
            return 2
        vds = validation_dataset(Path(args.export_root), data["val_ids"], data.get("val_gap", 1))
        model, _ = load_checkpoint(path)
        own = (model.embedding_kind, model.normalize_embedding)
        results[name] = {"checkpoint": path}
        tracks = vds.query  # the validation query and gallery are the same tracklets (MARS rule decides matches)
        assert [t.key for t in vds.gallery] == [t.key for t in tracks]
        clips = clip_embeddings(model, tracks, args.seq_len, data.get("resize", "bilinear"))
        pids, cams = [t.pid for t in tracks], [t.camid for t in tracks]
        for kind, cos in EMBEDDINGS:
            f = tracklet_features(*clips[kind], len(tracks), cos).numpy().astype("float64")
            res = evaluate_ranking(euclidean_distances(f, f), pids, pids, cams, cams)
            label = f"{kind}+{'cosine' if cos else 'euclid'}"
            results[name][label] = res
            mark = "*" if (kind, cos) == own else " "
            print(f"{name:<16s}{label + mark:<16s}{res['rank1']:>8.4f}{res['mAP']:>8.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
