"""One thread per library operation on the CPU, for a whole run: the same rows on any core count.

Some operations give different last bits depending on how many threads split them, and a verdict
that hangs on a threshold inherits those bits. Measured on this project's own pipelines:
- OpenCV's `warpAffine` computes source coordinates incrementally per block of rows; split over
  threads, the blocks start elsewhere and a half-turn warp differs in the last bits (alignment);
- oneDNN picks different convolution kernels for one and for several threads, so PaDiM's and the
  supervised reference's ImageNet features differ in the last bits;
- BLAS routines (scikit-learn's MLP, covariance maths) may split reductions by thread count.
With one thread per operation all three are exact and independent of the batch size too. A run
that wants more of the machine runs more cases at once (`-n N`, pytest-xdist) instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin_one_thread_per_op() -> Callable[[], None]:
    """Pin torch, OpenCV and BLAS to one thread per operation in this process and in processes it starts
    (Ray actors, subprocesses: torch reads the environment when it is first imported). Returns the call
    that puts back what was there before, for when the run ends."""
    import cv2
    from threadpoolctl import threadpool_limits

    saved_env = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    torch = sys.modules.get("torch")
    saved_torch = torch.get_num_threads() if torch is not None else None
    saved_cv2 = cv2.getNumThreads()
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    if torch is not None:
        torch.set_num_threads(1)
    cv2.setNumThreads(1)
    blas = threadpool_limits(1)

    def restore() -> None:
        blas.restore_original_limits()
        cv2.setNumThreads(saved_cv2)
        if saved_torch is not None:
            torch.set_num_threads(saved_torch)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return restore
