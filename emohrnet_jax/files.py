"""Atomic file writes shared by the data tools and the training loop."""

import json
import os
from typing import Any


def write_json_atomically(path: str, value: Any) -> None:
    """Writes JSON to `path` through a temporary file and a rename."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(value, file, indent=2)
    os.replace(temporary, path)
