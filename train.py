"""Train a real/fake face detector: ``python train.py --help`` (same as ``fakeface-train``).

Runs unchanged on several processes::

    torchrun --nproc_per_node 2 train.py ...           # CPU (gloo) or GPUs
    accelerate launch --num_processes 2 train.py ...   # GPUs; see docs/training.md for CPU

The command line lives in ``fakeface.cli.train``, the training in ``fakeface.training``.
"""
from fakeface.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
