"""Batched post-processing for torchvision's R-CNN detectors (Faster, Mask and Keypoint R-CNN).

torchvision filters the region proposals (`RegionProposalNetwork.filter_proposals`) and the
final detections (`RoIHeads.postprocess_detections`) in a Python loop over the images. Each pass
of those loops compacts its tensors three times, and every compaction (boolean indexing,
`torch.where`, NMS) waits for the GPU to catch up, so a batch of 32 costs ~200 synchronisations
and ~2000 small kernel launches on the CPU thread that drives the model: at 32 cameras that
thread spent 64 % of its time there (bench/NOTES.md).

`install(model)` replaces both methods on the model's own submodules with versions that handle
the whole batch at once: the same clipping, size and score filters as one mask, one NMS whose
groups keep images (and levels or classes) apart, the same per-image limit, and one split by
image, for three synchronisations per stage whatever the batch. The results are the
per-image loop's, in its order (test_rcnn_batched.py compares them on random inputs and on
the models). ROS-free.
"""
import logging
import types
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchvision

from multicam_ros.core.models.preprocess import top_per_image

_LOG = logging.getLogger(__name__)


def install(model: torch.nn.Module) -> bool:
    """Give an R-CNN `model` the batched filters; False (model unchanged) for other models or a
    torchvision whose R-CNN lacks the methods replaced here."""
    rpn, heads = getattr(model, 'rpn', None), getattr(model, 'roi_heads', None)
    needed = ((rpn, ('filter_proposals', '_get_top_n_idx', 'post_nms_top_n', 'min_size',
                     'score_thresh', 'nms_thresh')),
              (heads, ('postprocess_detections', 'box_coder', 'score_thresh', 'nms_thresh',
                       'detections_per_img')))
    if any(part is None or not all(hasattr(part, name) for name in names)
           for part, names in needed):
        return False
    rpn.filter_proposals = types.MethodType(filter_proposals, rpn)
    heads.postprocess_detections = types.MethodType(postprocess_detections, heads)
    _LOG.debug('R-CNN post-processing batched over the images')
    return True


def _limits(image_shapes: Sequence[Tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    """(height, width) per image -> B x 4 clip limits (w, h, w, h), in one small copy."""
    return torch.tensor([[width, height, width, height] for height, width in image_shapes],
                        dtype=like.dtype, device=like.device)


def _clip(boxes: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """torchvision's clip_boxes_to_image with a limit per box (broadcast)."""
    return torch.minimum(boxes.clamp(min=0), limits)


def _sides(boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]


def _per_image(tensors: Sequence[torch.Tensor], image_index: torch.Tensor,
               num_images: int) -> List[List[torch.Tensor]]:
    """Flat tensors grouped by image (ascending) -> one list of per-image tensors each."""
    counts = torch.bincount(image_index, minlength=num_images).tolist()
    return [list(tensor.split(counts)) for tensor in tensors]


def filter_proposals(self, proposals: torch.Tensor, objectness: torch.Tensor,
                     image_shapes: List[Tuple[int, int]],
                     num_anchors_per_level: List[int]) -> Tuple[List[torch.Tensor],
                                                                List[torch.Tensor]]:
    """RegionProposalNetwork.filter_proposals over the whole batch (bound to the RPN)."""
    num_images, device = proposals.shape[0], proposals.device
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat([torch.full((count,), level, dtype=torch.int64, device=device)
                        for level, count in enumerate(num_anchors_per_level)])
    top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)  # B x K, per level
    rows = torch.arange(num_images, device=device)[:, None]
    scores = torch.sigmoid(objectness[rows, top_n_idx])
    boxes = _clip(proposals[rows, top_n_idx], _limits(image_shapes, proposals)[:, None, :])
    width, height = _sides(boxes)
    wanted = (width >= self.min_size) & (height >= self.min_size) & (scores >= self.score_thresh)
    image_index, candidate = wanted.nonzero(as_tuple=True)  # image-major, as the loop visits
    boxes, scores = boxes[image_index, candidate], scores[image_index, candidate]
    groups = image_index * len(num_anchors_per_level) + levels[top_n_idx[image_index, candidate]]
    keep = torchvision.ops.batched_nms(boxes, scores, groups, self.nms_thresh)
    keep = keep[top_per_image(scores[keep], image_index[keep], num_images,
                              self.post_nms_top_n())]
    final_boxes, final_scores = _per_image((boxes[keep], scores[keep]), image_index[keep],
                                           num_images)
    return final_boxes, final_scores


def postprocess_detections(self, class_logits: torch.Tensor, box_regression: torch.Tensor,
                           proposals: List[torch.Tensor], image_shapes: List[Tuple[int, int]]
                           ) -> Tuple[List[torch.Tensor], List[torch.Tensor],
                                      List[torch.Tensor]]:
    """RoIHeads.postprocess_detections over the whole batch (bound to the RoI heads)."""
    device, num_classes, num_images = class_logits.device, class_logits.shape[-1], len(proposals)
    counts = [len(boxes) for boxes in proposals]
    pred_boxes = self.box_coder.decode(box_regression, proposals)  # N x C x 4, all images
    pred_scores = F.softmax(class_logits, -1)
    image_of_box = torch.arange(num_images, device=device).repeat_interleave(
        torch.tensor(counts, device=device), output_size=sum(counts))
    limits = _limits(image_shapes, pred_boxes)[image_of_box][:, None, :]
    boxes = _clip(pred_boxes, limits)[:, 1:]  # class 0 is the background
    scores = pred_scores[:, 1:]
    width, height = _sides(boxes)
    wanted = (scores > self.score_thresh) & (width >= 1e-2) & (height >= 1e-2)
    box_index, class_index = wanted.nonzero(as_tuple=True)  # box-major, as the loop flattens
    boxes, scores = boxes[box_index, class_index], scores[box_index, class_index]
    labels, image_index = class_index + 1, image_of_box[box_index]
    keep = torchvision.ops.batched_nms(boxes, scores, image_index * num_classes + labels,
                                       self.nms_thresh)
    keep = keep[top_per_image(scores[keep], image_index[keep], num_images,
                              self.detections_per_img)]
    all_boxes, all_scores, all_labels = _per_image((boxes[keep], scores[keep], labels[keep]),
                                                   image_index[keep], num_images)
    return all_boxes, all_scores, all_labels
