"""Static web assets: bundled copies of the JavaScript and CSS the HTML pages use (no CDN at run time)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
