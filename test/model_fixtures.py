"""A model double for tests where a model's outputs must be known exactly."""
import textwrap
from pathlib import Path

import pytest
import torch

__all__ = ['CenterBoxModel', 'center_box_model']


class CenterBoxModel(torch.nn.Module):
    """One 'thing' (score 0.9) centred in every network input, a quarter of its width and
    height, in the YOLO-style [batch, boxes, 4 + classes] layout of the torchscript back-end
    (two classes). Letterboxing is centred, so the box comes back centred in every source
    image, half as wide as the image's longer side."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        out = torch.zeros(batch, 1, 6, device=x.device, dtype=x.dtype)
        out[:, 0, 0] = width / 2.0
        out[:, 0, 1] = height / 2.0
        out[:, 0, 2] = width / 4.0
        out[:, 0, 3] = height / 4.0
        out[:, 0, 4] = 0.9
        return out


@pytest.fixture(scope='session')
def center_box_model(tmp_path_factory) -> Path:
    """CenterBoxModel saved as TorchScript, for the torchscript back-end's `model.path`."""
    path = tmp_path_factory.mktemp('model') / 'center_box.torchscript'
    torch.jit.script(CenterBoxModel()).save(str(path))
    return path


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
