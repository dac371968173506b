"""A small training run as its own process, for the fault-injection tests.

    python train_job.py CHECKPOINT OUT [--kill-at-replace N]

Trains a tiny WRN with Fickle-Teacher distillation (every kind of random draw: permutation, crop,
flip, dropout in teacher and student) and writes the final state dict to OUT.  With
--kill-at-replace N the process SIGKILLs itself at its N-th atomic rename, i.e. after a checkpoint
was fully written under its temporary name and before it replaced the previous one.
"""

import argparse
import os
import signal
import sys

import torch

from noisekd.data import Augmentation, ImageData
from noisekd.execution import TrainingInterrupted
from noisekd.methods import MethodParams, get_method
from noisekd.models import WRNSpec, build_model
from noisekd.settings import TrainConfig
from noisekd.train import fit

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("--kill-at-replace", type=int, default=0)
parser.add_argument("--epochs", type=int, default=6)
args = parser.parse_args()
torch.set_num_threads(1)

if args.kill_at_replace:
    real_replace, calls = os.replace, [0]

    def replace_then_die(src, dst):
        calls[0] += 1
        if calls[0] == args.kill_at_replace:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace_then_die

g = torch.Generator().manual_seed(0)
labels = torch.randint(0, 10, (256,), generator=g)
images = (labels.view(-1, 1, 1, 1) * 20 + torch.randint(0, 60, (256, 3, 8, 8), generator=g)).to(torch.uint8)
data = ImageData(images, labels, tuple(str(i) for i in range(10)))
teacher = build_model(WRNSpec(10, 1, dropout=0.3), 0)
student = build_model(WRNSpec(10, 1, dropout=0.1), 1)
cfg = TrainConfig(epochs=args.epochs, milestones=(3,), batch_size=16, seed=3)
print("started", flush=True)
try:
    result = fit(student, data, cfg, get_method("ft"), MethodParams(dropout=0.3), teacher=teacher,
                 augmentation=Augmentation(2, True), checkpoint_path=args.checkpoint, device="cpu",
                 log=lambda line: print(line, flush=True))
except TrainingInterrupted as exc:
    print(f"interrupted: {exc}", flush=True)
    sys.exit(3)
torch.save(result.model.state_dict(), args.out)
print("done", flush=True)
