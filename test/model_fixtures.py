"""A model double for tests where a model's outputs must be known exactly."""
import textwrap
from pathlib import Path

import pytest

from multicam_testbed.models import CenterBoxModel, save_center_box_model

__all__ = ['CenterBoxModel', 'center_box_model']


@pytest.fixture(scope='session')
def center_box_model(tmp_path_factory) -> Path:
    """CenterBoxModel saved as TorchScript, for the torchscript back-end's `model.path`."""
    return save_center_box_model(tmp_path_factory.mktemp('model') / 'center_box.torchscript')


def scripted_detector_yaml(model_path: Path) -> str:
    """The `detector:` section of a cams.yaml that runs CenterBoxModel on the CPU (the
    cheapest real model: launch tests are about plumbing, not detection)."""
    return textwrap.dedent(f"""\
        detector:
          model:
            backend: torchscript
            path: {model_path}
            class_names: [thing, other]
          device: cpu
          input_size: 320
        """)
