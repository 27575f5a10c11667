"""Batched versions of the per-image Python loops in torchvision's detection models. ROS-free.

torchvision runs several stages of its detectors image by image, in Python:
- `GeneralizedRCNNTransform.forward` (every torchvision detector: R-CNNs, RetinaNet, FCOS,
  SSD) normalises and resizes each image on its own, with two small host-to-device copies of
  the mean and standard deviation per image, each a synchronisation with the GPU;
- `GeneralizedRCNNTransform.postprocess` scales each image's boxes back, with two more such
  copies per image;
- the R-CNNs' `RegionProposalNetwork.filter_proposals` and `RoIHeads.postprocess_detections`
  compact their tensors three times per image (boolean indexing, `torch.where`, NMS), each a
  synchronisation too.
A batch of 32 thus costs a few hundred synchronisations and thousands of small kernel launches
on the one CPU thread that drives the model: at 32 cameras, 64 % of that thread went to the
last two alone (bench/NOTES.md).

`install(model)` replaces these methods on the model's own submodules with versions that handle
the whole batch at once: frames of one size are normalised and resized together (to the size
torchvision's own resize gives them), boxes scaled back in one operation, and the filters
applied as one mask, one NMS whose groups keep images (and levels or classes) apart, the same
per-image limit and one split by image. The results are torchvision's, bit for bit and in its
order (test_torchvision_batched.py compares them with torchvision's methods). `uninstall`
restores torchvision's own.
"""
import logging
import math
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import _resize_image_and_masks

from multicam_ros.core.models.preprocess import clip_boxes, image_of_each, top_per_image

_LOG = logging.getLogger(__name__)
_MAX_CACHED_SIZES = 64  # frame shapes whose resized size is remembered
# One NMS call over more boxes than this is split by image: torchvision's CUDA NMS ends in a
# one-block scan of an n x n/64 mask, 7.3 ms at n = 14,400 (32 images' proposals, H200).
_NMS_CHUNK_BOXES = 2048
# (submodule attribute, method name, the attributes the replacement uses)
_TRANSFORM = ('transform', ('forward', 'postprocess'),
              ('min_size', 'max_size', 'image_mean', 'image_std', 'size_divisible',
               'fixed_size'))
_RPN = ('rpn', ('filter_proposals',),
        ('_get_top_n_idx', 'post_nms_top_n', 'min_size', 'score_thresh', 'nms_thresh'))
_HEADS = ('roi_heads', ('postprocess_detections',),
          ('box_coder', 'score_thresh', 'nms_thresh', 'detections_per_img'))


def install(model: torch.nn.Module) -> List[str]:
    """Give `model` the batched versions of the loops it has; the names of those replaced
    (none for a model that is not a torchvision detector)."""
    replaced = []
    for attribute, methods, needed in (_TRANSFORM, _RPN, _HEADS):
        part = getattr(model, attribute, None)
        if part is None or not all(hasattr(part, name) for name in methods + needed):
            continue
        for name in methods:
            setattr(part, name, types.MethodType(_REPLACEMENTS[(attribute, name)], part))
            replaced.append(f'{attribute}.{name}')
    if replaced:
        _LOG.debug('batched over the images: %s', ', '.join(replaced))
    return replaced


def uninstall(model: torch.nn.Module) -> None:
    """torchvision's own methods again (they show through once the replacements are gone)."""
    for attribute, methods, _ in (_TRANSFORM, _RPN, _HEADS):
        part = getattr(model, attribute, None)
        for name in methods:
            if part is not None and name in vars(part):
                delattr(part, name)


# -- the transform ----------------------------------------------------------------------------

def transform_forward(self, images: List[torch.Tensor],
                      targets: Optional[List[Dict[str, torch.Tensor]]] = None
                      ) -> Tuple[ImageList, Optional[List[Dict[str, torch.Tensor]]]]:
    """GeneralizedRCNNTransform.forward at inference, one normalise and one resize per size
    of frame in the batch (bound to the transform)."""
    if self.training or targets is not None:
        return type(self).forward(self, images, targets)
    for image in images:
        if image.dim() != 3 or not image.is_floating_point():
            return type(self).forward(self, images, targets)  # torchvision says what is wrong
    by_size: Dict[Tuple[int, ...], List[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(index)
    first = images[0]
    mean, std = _normalisation(self, first)
    resized: List[Tuple[List[int], torch.Tensor]] = []
    for shape, indices in by_size.items():
        group = torch.stack([images[index] for index in indices]) if len(indices) > 1 \
            else images[indices[0]][None]
        resized.append((indices, F.interpolate((group - mean) / std,
                                               size=_resized_size(self, shape),
                                               mode='bilinear', align_corners=False)))
    stride = float(self.size_divisible)
    channels = max(group.shape[1] for _, group in resized)
    height = int(math.ceil(max(group.shape[2] for _, group in resized) / stride) * stride)
    width = int(math.ceil(max(group.shape[3] for _, group in resized) / stride) * stride)
    batched = first.new_zeros((len(images), channels, height, width))
    image_sizes: List[Tuple[int, int]] = [(0, 0)] * len(images)
    for indices, group in resized:
        _, c, h, w = group.shape
        if indices == list(range(indices[0], indices[0] + len(indices))):
            batched[indices[0]:indices[0] + len(indices), :c, :h, :w].copy_(group)
        else:
            for row, index in enumerate(indices):
                batched[index, :c, :h, :w].copy_(group[row])
        for index in indices:
            image_sizes[index] = (h, w)
    return ImageList(batched, image_sizes), targets


def _normalisation(self, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The transform's mean and standard deviation as C x 1 x 1 tensors like `like`, copied to
    the device once (torchvision copies both for every image)."""
    key = (like.dtype, like.device, tuple(self.image_mean), tuple(self.image_std))
    cached = self.__dict__.get('_multicam_normalisation')
    if cached is None or cached[0] != key:
        mean = torch.as_tensor(self.image_mean, dtype=like.dtype, device=like.device)
        std = torch.as_tensor(self.image_std, dtype=like.dtype, device=like.device)
        cached = (key, mean[:, None, None], std[:, None, None])
        self.__dict__['_multicam_normalisation'] = cached
    return cached[1], cached[2]


def _resized_size(self, shape: Tuple[int, ...]) -> List[int]:
    """The height and width torchvision's own resize gives a frame of `shape`: its resize run
    once per shape on a tensor that holds no data (the `meta` device; ~20 ms, through
    torch's Python decomposition of the resize, hence the cache), so that the rounding is
    whatever this torchvision's is."""
    key = (shape, self.min_size[-1], self.max_size, self.fixed_size)
    cache = self.__dict__.setdefault('_multicam_resized_sizes', {})
    if key not in cache:
        if len(cache) >= _MAX_CACHED_SIZES:
            cache.clear()
        probe = torch.empty(shape, device='meta')
        out, _ = _resize_image_and_masks(probe, self.min_size[-1], self.max_size, None,
                                         self.fixed_size)
        cache[key] = list(out.shape[-2:])
    return cache[key]


def transform_postprocess(self, result: List[Dict[str, torch.Tensor]],
                          image_shapes: List[Tuple[int, int]],
                          original_image_sizes: List[Tuple[int, int]]
                          ) -> List[Dict[str, torch.Tensor]]:
    """GeneralizedRCNNTransform.postprocess for boxes, all images in one multiplication (masks
    and keypoints go to torchvision's own)."""
    if self.training or not result or any(set(pred) - {'boxes', 'scores', 'labels'}
                                          for pred in result):
        return type(self).postprocess(self, result, image_shapes, original_image_sizes)
    boxes = torch.cat([pred['boxes'] for pred in result])
    counts = [len(pred['boxes']) for pred in result]
    # torchvision divides float32 sizes (original / network input) per image; numpy's float32
    # division rounds the same way, and one copy takes the per-box factors to the device.
    ratios = (np.float32(original_image_sizes) / np.float32(image_shapes))[:, [1, 0, 1, 0]]
    scale = torch.from_numpy(np.repeat(ratios, counts, axis=0)).to(boxes.device, boxes.dtype)
    for pred, scaled in zip(result, (boxes * scale).split(counts)):
        pred['boxes'] = scaled
    return result


# -- the R-CNN filters ------------------------------------------------------------------------

def _limits(image_shapes: Sequence[Tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    """(height, width) per image -> B x 4 limits (w, h, w, h) for preprocess.clip_boxes, which
    clips as torchvision's clip_boxes_to_image does, in one small copy."""
    return torch.tensor([[width, height, width, height] for height, width in image_shapes],
                        dtype=like.dtype, device=like.device)


def _sides(boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]


def _per_image(tensors: Sequence[torch.Tensor], image_index: torch.Tensor,
               num_images: int) -> List[List[torch.Tensor]]:
    """Flat tensors grouped by image (ascending) -> one list of per-image tensors each."""
    counts = torch.bincount(image_index, minlength=num_images).tolist()
    return [list(tensor.split(counts)) for tensor in tensors]


def _nms_by_image(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                  image_index: torch.Tensor, num_images: int,
                  iou_threshold: float) -> torch.Tensor:
    """torchvision's batched_nms over image-major candidates (`groups` never spanning two
    images), in calls of whole images with at most _NMS_CHUNK_BOXES boxes each where the batch
    has more; kept indices by score within each call, the calls in image order."""
    if len(boxes) <= _NMS_CHUNK_BOXES:
        return torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)
    kept, start, end = [], 0, 0
    for count in torch.bincount(image_index, minlength=num_images).tolist():
        if end > start and end + count - start > _NMS_CHUNK_BOXES:
            kept.append(start + torchvision.ops.batched_nms(
                boxes[start:end], scores[start:end], groups[start:end], iou_threshold))
            start = end
        end += count
    kept.append(start + torchvision.ops.batched_nms(boxes[start:end], scores[start:end],
                                                    groups[start:end], iou_threshold))
    return torch.cat(kept)


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
    boxes = clip_boxes(proposals[rows, top_n_idx], _limits(image_shapes, proposals)[:, None, :])
    width, height = _sides(boxes)
    wanted = (width >= self.min_size) & (height >= self.min_size) & (scores >= self.score_thresh)
    image_index, candidate = wanted.nonzero(as_tuple=True)  # image-major, as the loop visits
    boxes, scores = boxes[image_index, candidate], scores[image_index, candidate]
    groups = image_index * len(num_anchors_per_level) + levels[top_n_idx[image_index, candidate]]
    keep = _nms_by_image(boxes, scores, groups, image_index, num_images, self.nms_thresh)
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
    image_of_box = image_of_each(counts, device)
    limits = _limits(image_shapes, pred_boxes)[image_of_box][:, None, :]
    boxes = clip_boxes(pred_boxes, limits)[:, 1:]  # class 0 is the background
    scores = pred_scores[:, 1:]
    width, height = _sides(boxes)
    wanted = (scores > self.score_thresh) & (width >= 1e-2) & (height >= 1e-2)
    box_index, class_index = wanted.nonzero(as_tuple=True)  # box-major, as the loop flattens
    boxes, scores = boxes[box_index, class_index], scores[box_index, class_index]
    labels, image_index = class_index + 1, image_of_box[box_index]
    keep = _nms_by_image(boxes, scores, image_index * num_classes + labels, image_index,
                         num_images, self.nms_thresh)
    keep = keep[top_per_image(scores[keep], image_index[keep], num_images,
                              self.detections_per_img)]
    all_boxes, all_scores, all_labels = _per_image((boxes[keep], scores[keep], labels[keep]),
                                                   image_index[keep], num_images)
    return all_boxes, all_scores, all_labels


_REPLACEMENTS: Dict[Tuple[str, str], Callable[..., Any]] = {
    ('transform', 'forward'): transform_forward,
    ('transform', 'postprocess'): transform_postprocess,
    ('rpn', 'filter_proposals'): filter_proposals,
    ('roi_heads', 'postprocess_detections'): postprocess_detections,
}
