"""Temperature scaling (Guo et al., 2017): one scalar T, fitted on held-out data by minimising the negative
log-likelihood of softmax(log-likelihoods / T). It changes confidences, never the ranking (accuracy is
unchanged). Fitted after training on the evaluation set; stored in the run's visiontune.json."""

from __future__ import annotations

import torch

MIN_T, MAX_T = 0.05, 100.0


def fit_temperature(log_likelihoods: torch.Tensor, targets: torch.Tensor, steps: int = 200) -> float:
    """log_likelihoods: (samples, classes) per-class answer log-likelihoods; targets: (samples,) class indices."""
    scores = log_likelihoods.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores / log_t.exp(), targets)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp().clamp(MIN_T, MAX_T))
