import os

# Deterministic cuBLAS on a GPU machine (must be set before CUDA starts; no effect on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores on the development and CI machines: one intra-op thread per core, no oversubscription.
torch.set_num_threads(int(os.environ.get("NOISEKD_TEST_THREADS", "2")))
torch.use_deterministic_algorithms(True)



@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """The ci preset run to its end with `--cores 2` (shared by the end-to-end and rerun tests; those
    that change files work on a copy).  A broken `noisekd` lies first on PYTHONPATH: every job must
    import this checkout's."""
    from ci_run import run_ci_preset, stale_copy_first

    tmp = tmp_path_factory.mktemp("local")
    results, _ = run_ci_preset(tmp, "local", "--cores", "2", env=stale_copy_first(tmp))
    return results
