"""Training throughput per architecture, channels-last against the contiguous layout, in one run.

Prints images/s of a forward + backward + AdamW step at the embedded default's input sizes, for
both memory formats, and the ratio channels_last / contiguous (the baseline). Random inputs and
weights: throughput does not depend on them.

    python benchmarks/train_throughput.py [--threads 1] [--batch 64] [--steps 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from alertvision.config import load_config
from alertvision.models import build_model


def images_per_second(arch_cfg: dict, head: dict, memory_format: torch.memory_format, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(arch_cfg, head).to(memory_format=memory_format).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 63, 63).contiguous(memory_format=memory_format)
    y = (torch.rand(batch) < 0.4).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for step in range(steps + 1):
        if step == 1:  # the first step warms up allocators and kernels
            start = time.perf_counter()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    print(f"threads {args.threads}, batch {args.batch}, {args.steps} timed steps")
    print(f"{'arch':10s} {'size':>4s} {'contiguous img/s':>17s} {'channels_last img/s':>20s} {'ratio':>6s}")
    for arch, spec in config["archs"].items():
        base = images_per_second(spec, config["training"], torch.contiguous_format, args.batch, args.steps)
        fast = images_per_second(spec, config["training"], torch.channels_last, args.batch, args.steps)
        print(f"{arch:10s} {spec['input_size']:4d} {base:17.1f} {fast:20.1f} {fast / base:6.2f}")


if __name__ == "__main__":
    main()
