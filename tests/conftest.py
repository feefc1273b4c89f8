"""Test-wide setup: a private preset cache, so tests never touch the user's cache folder."""

import os
import tempfile

# Set before any test imports fl_app, and inherited by the Flower processes tests start.
os.environ.setdefault("EDGESPLIT_CACHE", tempfile.mkdtemp(prefix="edgesplit-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
