#!/usr/bin/env python3
"""Training recipes side by side on the validation split of configs/reid_ar_osnet_shared.yaml (issue #22).

    python bench/reid_ar_recipe.py --export-root /tmp/reid_export --threads 1 \\
        current=runs/current/model_final.pth official=runs/official/model_final.pth

For each NAME=CHECKPOINT (trained with `data.val_ids`; the held-out people's tracklets time-split into two
pseudo-cameras, see pipeline/reid_data/datasets.py hold_out_validation): rank-1 and mAP on that validation split with
each retrieval embedding (BNNeck `bn` or pooled `global` feature; Euclidean or cosine), test clips resized as the
checkpoint was trained (`data.resize`). The row marked `*` is the checkpoint's own embedding, the one its config
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
    from pipeline.reid_data.training import evaluate_model

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
        for kind, cos in EMBEDDINGS:
            model.embedding_kind, model.normalize_embedding = kind, cos
            res = evaluate_model(model, vds, args.seq_len, model.input_size, "dense", None,
                                 resize=data.get("resize", "bilinear"))
            label = f"{kind}+{'cosine' if cos else 'euclid'}"
            results[name][label] = res
            mark = "*" if (kind, cos) == own else " "
            print(f"{name:<16s}{label + mark:<16s}{res['rank1']:>8.4f}{res['mAP']:>8.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
