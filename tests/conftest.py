"""Suite-wide settings."""
import os

# The CLI's first-run fallback (answer with NumPy, compile in a detached background process) stays off in the
# suite: a background compile writing the kernels' cache while this process compiles into it too can crash
# Numba. tests/test_first_run.py turns it on in its own subprocesses with their own NUMBA_CACHE_DIR.
os.environ.setdefault("MNV2REF_BACKGROUND_COMPILE", "0")
