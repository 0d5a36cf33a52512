"""The api suite runs with --import-mode=importlib, which leaves sys.path alone: make the helper modules beside
this file (ws_support.py) importable by the test modules."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
