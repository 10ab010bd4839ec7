"""Run under a 2-process launcher by tests/test_ddp.py: every rank hashes its pruning masks and the
ranks compare hashes, as prune does after each of INC's mask updates. With --desync, rank 1 flips one
mask bit, and the check must stop the run with the mismatch error."""

import sys

import torch

from pipeline.training import device

acc = device.accelerator(device.Placement("cpu", "fp32", "cpu/fp32", None))
masks = {"encoder.layer.0.attention.self.query": torch.ones(8, 8, dtype=torch.bool)}
device.check_in_sync(acc, masks, step=1)  # the same masks everywhere: passes
if "--desync" in sys.argv and acc.process_index == 1:
    masks["encoder.layer.0.attention.self.query"][3, 5] = False
device.check_in_sync(acc, masks, step=2)
print(f"rank {acc.process_index}: masks in sync")
device.finish(acc)
