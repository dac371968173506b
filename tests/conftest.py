import os

# Deterministic cuBLAS on a GPU machine (must be set before CUDA starts; no effect on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

# Two cores on the development and CI machines: one intra-op thread per core, no oversubscription.
torch.set_num_threads(int(os.environ.get("NOISEKD_TEST_THREADS", "2")))
torch.use_deterministic_algorithms(True)

