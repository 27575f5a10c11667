"""A model double with known outputs, for the tests and the soak (imports torch: only those that
run a model import this module)."""
from pathlib import Path

import torch


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


def save_center_box_model(path: Path) -> Path:
    """CenterBoxModel as TorchScript at `path` (for the torchscript back-end's model.path)."""
    torch.jit.script(CenterBoxModel()).save(str(path))
    return path
