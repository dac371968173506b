import os

import torch

# Two cores on the development and CI machines: one intra-op thread per core, no oversubscription.
torch.set_num_threads(int(os.environ.get("NOISEKD_TEST_THREADS", "2")))
torch.use_deterministic_algorithms(True)

