"""Re-ID-AR training losses.

* `CrossEntropyLabelSmooth`: cross-entropy against (1 - eps) * one-hot + eps / K, K = the number of identities
  (`smooth_classes="identities"`, correct). `smooth_classes="batch"` reproduces the official Re-ID-AR code, which
  builds the loss with the batch size B as K: the target is (1 - eps) * one-hot + eps / B on every one of the N
  identity logits (so it sums to 1 - eps + eps * N / B, ~1.88 on MARS: much stronger smoothing than eps = 0.1).
* `RankedListLoss` (Wang et al., CVPR 2019): for each anchor i, with pairwise distance d_ij,
    positives:  L_P = mean over non-trivial positives (d_ij > alpha - margin) of (d_ij - (alpha - margin))
    negatives:  L_N = sum over non-trivial negatives (d_ij < alpha) of w_ij * (alpha - d_ij),
                w_ij = exp(t * (alpha - d_ij)) / sum of those weights over the anchor's non-trivial negatives
  loss = mean over anchors of L_P + L_N. Defaults margin 1.3, alpha 2.0, t 1.0; features are L2-normalised first
  (`normalize=True`, as in the re-id use of this loss) so distances lie in [0, 2].
  `positive_norm="all"` divides L_P by the number of ALL positives of the anchor (the official Re-ID-AR code) instead
  of the non-trivial ones (the RLL paper); `weight_grad=True` lets the gradient flow through the weights w_ij (the
  official code) instead of treating them as constants.
* `CenterLoss` (Wen et al., 2016): mean over the batch of ||x_i - c_{y_i}||^2 with learnable centers.
* `AttentionErasedLoss`: frames that random erasing hit should get low temporal attention. Two forms:
  `form="softmax_mass"`: for every clip that has at least one erased and one clean frame, the attention mass on its
  erased frames, sum_{t erased} a_t (in [0, 1]); averaged over those clips, 0 when there are none.
  `form="scores"` (the official code): the pre-softmax (ReLU) attention scores s_t of the erased frames, summed per
  clip and averaged over ALL clips of the batch: mean_b sum_{t erased} s_bt (>= 0, unbounded).
* `ActionBCELoss`: per action block, binary cross-entropy with the one-hot target of the clip's action; clips whose
  action is 0 (unlabelled) are ignored. Labels here are 1-based as in the label files.
* `ActionCenterLoss`: center loss on the action features: for a labelled clip with action a, the hidden feature of
  action block a is pulled towards a learnable center c_a; unlabelled clips are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


SMOOTH_CLASSES = ("identities", "batch")


class CrossEntropyLabelSmooth(nn.Module):
    """logits (B, N), targets (B,) in [0, N) -> scalar. `smooth_classes`: "identities" (eps / N, correct) or "batch"
    (eps / B, the official code's bug; see the module docstring)."""

    def __init__(self, epsilon: float = 0.1, smooth_classes: str = "identities") -> None:
        super().__init__()
        if smooth_classes not in SMOOTH_CLASSES:
            raise ValueError(f"smooth_classes must be one of {SMOOTH_CLASSES}, got {smooth_classes!r}")
        self.epsilon, self.smooth_classes = epsilon, smooth_classes

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1] if self.smooth_classes == "identities" else logits.shape[0]
        log_probs = F.log_softmax(logits, dim=1)
        target = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1.0)
        target = (1 - self.epsilon) * target + self.epsilon / k
        return -(target * log_probs).sum(1).mean()


def pairwise_distance(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distance matrix, numerically safe (clamped before sqrt)."""
    y = x if y is None else y
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2 * x @ y.t()
    return d2.clamp_min(1e-12).sqrt()


class RankedListLoss(nn.Module):
    """features (B, D), labels (B,) -> scalar (see the module docstring)."""

    def __init__(self, margin: float = 1.3, alpha: float = 2.0, t: float = 1.0, normalize: bool = True,
                 positive_norm: str = "nontrivial", weight_grad: bool = False) -> None:
        super().__init__()
        if positive_norm not in ("nontrivial", "all"):
            raise ValueError(f"positive_norm must be 'nontrivial' or 'all', got {positive_norm!r}")
        self.margin, self.alpha, self.t, self.normalize = margin, alpha, t, normalize
        self.positive_norm, self.weight_grad = positive_norm, weight_grad

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            features = F.normalize(features, dim=1)
        dist = pairwise_distance(features)
        n = dist.shape[0]
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(n, dtype=torch.bool, device=dist.device)
        pos_mask = same & ~eye
        neg_mask = ~same
        pos_thr = self.alpha - self.margin
        pos_active = pos_mask & (dist > pos_thr)
        pos_loss = torch.where(pos_active, dist - pos_thr, torch.zeros_like(dist)).sum(1)
        pos_count = pos_active.sum(1) if self.positive_norm == "nontrivial" else pos_mask.sum(1)
        pos_loss = pos_loss / pos_count.clamp_min(1)
        neg_active = neg_mask & (dist < self.alpha)
        gap = self.alpha - dist
        # by default the weights are constants (no gradient through them); the official code lets it flow
        w = torch.where(neg_active, torch.exp(self.t * (gap if self.weight_grad else gap.detach())),
                        torch.zeros_like(dist))
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        neg_loss = (w * torch.where(neg_active, gap, torch.zeros_like(dist))).sum(1)
        return (pos_loss + neg_loss).mean()


class CenterLoss(nn.Module):
    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if features.shape[0] == 0:
            return features.sum() * 0.0
        diff = features - self.centers[labels]
        return (diff * diff).sum(1).clamp(1e-12, 1e12).mean()


ATTENTION_FORMS = ("softmax_mass", "scores")


class AttentionErasedLoss(nn.Module):
    """`form="softmax_mass"`: forward(attention (B, T) post-softmax, erased (B, T) bool);
    `form="scores"`: forward(scores (B, T) pre-softmax ReLU scores, erased (B, T) bool). -> scalar."""

    def __init__(self, form: str = "softmax_mass") -> None:
        super().__init__()
        if form not in ATTENTION_FORMS:
            raise ValueError(f"attention loss form must be one of {ATTENTION_FORMS}, got {form!r}")
        self.form = form

    def forward(self, attention: torch.Tensor, erased: torch.Tensor) -> torch.Tensor:
        erased = erased.to(attention.dtype)
        if self.form == "scores":
            return (attention * erased).sum(1).mean()
        valid = (erased.sum(1) > 0) & (erased.sum(1) < erased.shape[1])
        if not bool(valid.any()):
            return attention.sum() * 0.0
        mass = (attention * erased).sum(1)
        return mass[valid].mean()


class ActionBCELoss(nn.Module):
    def forward(self, action_logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """action_logits (B, A); actions (B,) 1-based, 0 = unlabelled (ignored)."""
        labelled = actions > 0
        if action_logits.shape[1] == 0 or not bool(labelled.any()):
            return action_logits.sum() * 0.0
        target = F.one_hot(actions[labelled] - 1, action_logits.shape[1]).to(action_logits.dtype)
        return F.binary_cross_entropy_with_logits(action_logits[labelled], target)


class ActionCenterLoss(nn.Module):
    def __init__(self, num_actions: int, feat_dim: int) -> None:
        super().__init__()
        self.center = CenterLoss(max(num_actions, 1), feat_dim)

    def forward(self, action_features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """action_features (B, A, F); actions (B,) 1-based, 0 ignored."""
        labelled = actions > 0
        if action_features.shape[1] == 0 or not bool(labelled.any()):
            return action_features.sum() * 0.0
        idx = actions[labelled] - 1
        feats = action_features[labelled][torch.arange(idx.numel(), device=idx.device), idx]
        return self.center(feats, idx)


FEATURES = ("global", "bn")


class ReIDARLoss(nn.Module):
    """Weighted sum of all the terms; returns (total, {name: value}) for logging.

    `ranked_feature` / `center_feature`: which clip feature of `ReIDARTrainOutput` each metric loss sees: "global"
    (the attention-pooled feature before the BNNeck) or "bn" (the bottleneck feature, the official code's choice).
    `attention_form`: see `AttentionErasedLoss` ("scores" = the official code's)."""

    def __init__(self, num_classes: int, feat_dim: int, num_actions: int, action_feat_dim: int = 512,
                 label_smooth: float = 0.1, ranked_margin: float = 1.3, ranked_alpha: float = 2.0,
                 ranked_t: float = 1.0, ranked_normalize: bool = True, w_id: float = 1.0, w_ranked: float = 1.0,
                 w_center: float = 0.0005, w_attention: float = 1.0, w_action: float = 1.0,
                 w_action_center: float = 0.0005, ranked_feature: str = "global", center_feature: str = "global",
                 attention_form: str = "softmax_mass", smooth_classes: str = "identities",
                 ranked_positive_norm: str = "nontrivial", ranked_weight_grad: bool = False) -> None:
        super().__init__()
        for name, value in (("ranked_feature", ranked_feature), ("center_feature", center_feature)):
            if value not in FEATURES:
                raise ValueError(f"{name} must be one of {FEATURES}, got {value!r}")
        self.ranked_feature, self.center_feature = ranked_feature, center_feature
        self.ce = CrossEntropyLabelSmooth(label_smooth, smooth_classes)
        self.ranked = RankedListLoss(ranked_margin, ranked_alpha, ranked_t, ranked_normalize, ranked_positive_norm,
                                     ranked_weight_grad)
        self.center = CenterLoss(num_classes, feat_dim)
        self.attention = AttentionErasedLoss(attention_form)
        self.action = ActionBCELoss()
        self.action_center = ActionCenterLoss(num_actions, action_feat_dim)
        self.w = dict(id=w_id, ranked=w_ranked, center=w_center, attention=w_attention, action=w_action,
                      action_center=w_action_center)

    @staticmethod
    def _feature(out, kind: str) -> torch.Tensor:
        return out.bn_feature if kind == "bn" else out.global_feature

    def forward(self, out, pids: torch.Tensor, actions: torch.Tensor, erased: torch.Tensor):
        """out: a `ReIDARTrainOutput`; pids (B,) in [0, num_classes); actions (B,) 1-based, 0 unlabelled;
        erased (B, T) bool."""
        if self.attention.form == "scores":
            if out.attention_scores is None:
                raise ValueError("attention loss form 'scores' needs the model's pre-softmax attention scores")
            att = out.attention_scores
        else:
            att = out.attention
        terms = {
            "id": self.ce(out.logits, pids),
            "ranked": self.ranked(self._feature(out, self.ranked_feature), pids),
            "center": self.center(self._feature(out, self.center_feature), pids),
            "attention": self.attention(att, erased),
            "action": self.action(out.action_logits, actions),
            "action_center": self.action_center(out.action_features, actions),
        }
        total = sum(self.w[k] * v for k, v in terms.items() if self.w[k])
        return total, {k: float(v.detach()) for k, v in terms.items()}
