"""The example client is imported from its directory, as a team that generated it would:
examples/python-client goes on sys.path (it is not installed)."""

from __future__ import annotations

import sys
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parents[2] / "examples" / "python-client"

if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))
