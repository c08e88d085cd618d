"""The logged diagnostics of the entropy-progress estimator (spec §7), accumulated chunk by chunk.

Every value is over the valid tokens of the batch: gate mean/std/max, the share of pivots (z > 1), the share of
all-equal-reward groups, mean |η Ψ|, mean/std of the token advantages, the share of tokens whose sign differs
from sign(Â_i) and, with the 80/20 mask, the share of tokens kept.
"""

from __future__ import annotations

import torch

from erpo_verl.estimators.config import EntropyProgressConfig
from erpo_verl.estimators.outcome import OutcomeStats


class Moments:
    """Count, mean and centred sum of squares of the valid values, chunk by chunk: each chunk two-pass in
    float32, chunks merged with the pairwise update of Chan, Golub & LeVeque in float64."""

    def __init__(self, device):
        self.n = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.m2 = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, values: torch.Tensor, mf: torch.Tensor, count: torch.Tensor, scratch: torch.Tensor) -> None:
        mean = values.sum() / count.clamp_min(1.0)
        centred = torch.addcmul(values, mf, mean, value=-1.0, out=scratch).view(-1)
        m2 = torch.dot(centred, centred).double()
        count, mean = count.double(), mean.double()
        total = self.n + count
        delta = mean - self.mean
        share = torch.where(total > 0, count / total.clamp_min(1.0), torch.zeros_like(total))
        self.m2 = self.m2 + m2 + delta * delta * self.n * share
        self.mean = self.mean + delta * share
        self.n = total

    def mean_std(self) -> tuple[float, float]:
        if self.n.item() == 0:
            return 0.0, 0.0
        return self.mean.item(), (self.m2 / self.n).clamp_min(0.0).sqrt().item()


class MetricSums:
    """Running sums of the metrics; :meth:`fill` writes them into the ``metrics`` dict."""

    def __init__(self, device):
        zero = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.valid, self.pivots, self.progress_abs, self.flips, self.kept = zero(), zero(), zero(), zero(), zero()
        self.gate_max = torch.full((), float("-inf"), device=device)
        self.gate = Moments(device)
        self.adv = Moments(device)

    def add_chunk(self, result, mf, n, adv_hat, gate, psi, keep, scratch) -> None:
        count = n.sum()
        self.valid += count
        if keep is not None:
            self.kept += keep.sum()
        if gate is not None:
            self.gate.add(gate, mf, count, scratch)
            if gate.numel():
                self.gate_max = torch.maximum(self.gate_max, gate.max())  # masked positions are 0 ≤ W
        if psi is not None:
            self.progress_abs += torch.abs(psi, out=scratch).sum()
        self.adv.add(result, mf, count, scratch)
        # tokens whose sign differs from sign(Â_i); a masked position (A = 0) differs iff Â_i ≠ 0: take those out
        outcome = torch.sign(adv_hat)
        differs = torch.ne(torch.sign(result, out=scratch), outcome, out=scratch).sum()
        self.flips += differs - ((result.shape[1] - n) * (outcome.squeeze(1) != 0)).sum()

    def fill(self, metrics: dict, cfg: EntropyProgressConfig, outcome: OutcomeStats) -> None:
        n = max(self.valid.item(), 1.0)
        if cfg.gate:
            mean, std = self.gate.mean_std()
            gate_max = self.gate_max.item() if self.valid.item() > 0 else 0.0
            metrics["gate_mean"], metrics["gate_std"], metrics["gate_max"] = mean, std, gate_max
            metrics["pivot_frac"] = self.pivots.item() / n
        else:
            metrics["gate_mean"], metrics["gate_std"], metrics["gate_max"] = (1.0, 0.0, 1.0)
        metrics["zero_var_group_frac"] = outcome.all_equal.float().mean().item() if outcome.num_groups else 0.0
        metrics["progress_abs_mean"] = self.progress_abs.item() / n if cfg.progress_coef > 0 else 0.0
        metrics["adv_mean"], metrics["adv_std"] = self.adv.mean_std()
        metrics["sign_flip_frac"] = self.flips.item() / n
        if cfg.top_entropy_ratio is not None:
            metrics["forking_kept_frac"] = self.kept.item() / n
