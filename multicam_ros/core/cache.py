"""Where this package keeps the files it fetches (models, footage): outside git. ROS-free.

One root, `$MULTICAM_ROS_CACHE` when set, else `$XDG_CACHE_HOME/multicam_ros`, else
`~/.cache/multicam_ros`. Converted models live under `models/<name>/`, sample footage under
`media/`. Writers (system/model_store.py) and readers (the model back-ends, the demo, tests)
take their paths from here, so there is one place to change.
"""
import os
from pathlib import Path

CACHE_VARIABLE = 'MULTICAM_ROS_CACHE'
FETCH_COMMAND = 'multicam-ros models fetch'


def cache_root() -> Path:
    """The cache root (not created here)."""
    explicit = os.environ.get(CACHE_VARIABLE, '').strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME', '').strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / '.cache'
    return base / 'multicam_ros'


def models_dir() -> Path:
    """Folder of converted models, one sub-folder each."""
    return cache_root() / 'models'


def media_dir() -> Path:
    """Folder of sample footage (vtest.avi)."""
    return cache_root() / 'media'
