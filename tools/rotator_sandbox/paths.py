"""Where the repository's pieces live (the package is installed editable from tools/)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_DIR = ROOT / "functions" / "rotator"
TOOLS_DIR = ROOT / "tools"
EVENTS_DIR = ROOT / "events"
