"""Where the app's shipped files live: icons, the style sheet, sampling presets and the default model."""
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
