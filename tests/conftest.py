"""Native libraries loaded once for the whole test session, before any in-process pytest run.

`pytester`'s in-process runs drop the modules they imported when they end; fmtest imports torch and OpenCV
lazily, so the first run that needs one would import it, lose it, and the next would import the C extension
a second time into the same process, which crashes it (a segfault in torch's init). Importing them here keeps
them loaded across runs.
"""

import cv2  # noqa: F401
import torch  # noqa: F401

try:  # MLflow's dependencies add importlib_metadata's finder to sys.meta_path when first imported; an in-process
    import importlib_metadata  # noqa: F401  # run after that change lost the fmtest plugin, so it is made here, once
except ImportError:
    pass
