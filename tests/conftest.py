import os

import pytest
import torch

# Two cores on the development and CI machines: one intra-op thread per core, no oversubscription.
torch.set_num_threads(int(os.environ.get("NOISEKD_TEST_THREADS", "2")))
torch.use_deterministic_algorithms(True)


@pytest.fixture
def tmp_results(tmp_path):
    return tmp_path
