"""Train TinyGPT on the standard library's docstrings and write the shipped weights.

Run from the repository root::

    .venv/bin/python -m edgekit.examples.tinygpt.train            # writes tinygpt.pt
    .venv/bin/python -m edgekit.examples.tinygpt.train --steps 50 --out /tmp/t.pt

Deterministic: fixed seed, one thread, deterministic algorithms, batches drawn from a seeded
numpy generator, a fixed number of steps (not a time budget, which would depend on the host).
The defaults take ~8 minutes on one free core of the build machine. Perplexity on held-out
source files (never trained on) is printed at the end.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from edgekit.examples.tinygpt.corpus import corpus_bytes, eval_windows, to_array
from edgekit.examples.tinygpt.model import CONTEXT, WEIGHTS_FILE, TinyGPT
from edgekit.text import perplexity

SEED = 0
STEPS = 700
BATCH = 32
LR = 2e-3
WARMUP = 50
MIN_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.01


def lr_at(step: int, steps: int, lr: float = LR) -> float:
    """Linear warm-up, then cosine decay to ``MIN_LR_FRACTION * lr``."""
    if step < WARMUP:
        return lr * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(steps - WARMUP, 1)
    return lr * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: TinyGPT, tokens: np.ndarray, steps: int = STEPS, batch: int = BATCH, seed: int = SEED,
          log_every: int = 50) -> TinyGPT:
    """Next-byte cross-entropy with AdamW on random ``CONTEXT + 1`` windows of ``tokens``."""
    rng = np.random.default_rng(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "pos"]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or n == "pos"]
    # No weight decay on biases, LayerNorm gains or positions (standard GPT practice).
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95))
    model.train()
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        starts = rng.integers(0, len(tokens) - CONTEXT - 1, size=batch)
        window = torch.from_numpy(np.stack([tokens[s:s + CONTEXT + 1] for s in starts]))
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)
    return model.eval()


def heldout_perplexity(model: TinyGPT, windows: np.ndarray) -> float:
    """Perplexity of ``model`` (PyTorch) on ``[N, 65]`` windows."""
    with torch.no_grad():
        return perplexity(lambda x: model(torch.from_numpy(x)).numpy(), windows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train TinyGPT and write its weights.")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    train_text, heldout_text = corpus_bytes()
    print(f"corpus: {len(train_text)} train bytes, {len(heldout_text)} held-out bytes")
    model = train(TinyGPT(), to_array(train_text), steps=args.steps)
    torch.save(model.state_dict(), args.out)
    print(f"held-out perplexity (bytes): {heldout_perplexity(model, eval_windows(heldout_text)):.3f}  -> {args.out}")


if __name__ == "__main__":
    main()
