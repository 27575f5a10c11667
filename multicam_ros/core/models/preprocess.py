"""Batched pre- and post-processing on the model's device. ROS-free.

Pre-processing: camera frames (H x W x 3 uint8 BGR, any sizes, mixed in one batch) are uploaded
from pinned memory with non-blocking copies (`Uploader`), grouped by size, and converted to RGB
float 0-1 on the device. `letterbox_batch`
then fits each into a square S x S network input:

    scale = min(S / w, S / h)
    pad_x = (S - w * scale) / 2,  pad_y = (S - h * scale) / 2   (may be fractional)

A source point (x, y), in continuous pixel coordinates (0..w, 0..h, the edge of the frame at
0), lies at (x * scale + pad_x, y * scale + pad_y) in the network input. The input is sampled
with exactly that transform (bilinear, like OpenCV's INTER_LINEAR; no anti-aliasing), and the
network pixels whose centres fall outside the frame hold the padding value 114/255. Because the
sampling uses the exact scale and padding, with no rounding of the resized size, the inverse

    x = (x_net - pad_x) / scale,  y = (y_net - pad_y) / scale,  clipped to the frame

maps boxes back to source pixels exactly (`boxes_to_source`).

Post-processing: confidence threshold, `classes` filter, mapping to source pixels (boxes left
with no area, i.e. wholly in the padding, are dropped), class-aware NMS over the whole batch in
one `torchvision.ops.batched_nms` call (boxes of different images never suppress each other),
at most `max_detections` per image, then ONE copy to the host for the whole batch.
"""
import threading
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision

from multicam_ros.core.frames import InputFrame
from multicam_ros.core.models.base import Detections

PAD_VALUE = 114.0 / 255.0


@dataclass(frozen=True)
class Letterbox:
    """Where one frame lies in the square network input: network = source * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # source frame, px
    height: int

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> 'Letterbox':
        """Centre a `width` x `height` frame in a `size` x `size` input, as large as fits."""
        scale = min(size / width, size / height)
        return cls(scale, (size - width * scale) / 2.0, (size - height * scale) / 2.0,
                   width, height)


def check_frames(images_bgr: Sequence[np.ndarray]) -> None:
    """Raise ValueError unless every frame is an H x W x 3 uint8 array with H, W >= 1 (a numpy
    array, or a torch tensor already on the device: DeviceStager's uploads)."""
    for index, image in enumerate(images_bgr):
        if (not isinstance(image, (np.ndarray, torch.Tensor))
                or image.dtype not in (np.uint8, torch.uint8) or image.ndim != 3
                or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1):
            shape = getattr(image, 'shape', None)
            dtype = getattr(image, 'dtype', type(image).__name__)
            raise ValueError(f'frame {index} of the batch: expected an H x W x 3 uint8 BGR '
                             f'array, got shape {shape} dtype {dtype}')


def upload_rgb(images_bgr: Sequence[np.ndarray], uploader: 'Uploader') -> List[torch.Tensor]:
    """Frames -> one 3 x H x W float RGB 0-1 tensor each, on the uploader's device, in the
    batch's order. The conversion runs on the device."""
    check_frames(images_bgr)
    result: List[Optional[torch.Tensor]] = [None] * len(images_bgr)
    for indices, group in uploader.groups(images_bgr).items():
        for index, tensor in zip(indices, rgb_float(group).unbind(0)):
            result[index] = tensor
    return result  # type: ignore[return-value]


def letterbox_batch(images_bgr: Sequence[np.ndarray], size: int, device: str,
                    dtype: torch.dtype = torch.float32, uploader: Optional['Uploader'] = None
                    ) -> Tuple[torch.Tensor, List[Letterbox]]:
    """Frames -> (B x 3 x size x size RGB 0-1 tensor on `device`, each frame's Letterbox).
    A back-end passes its own `uploader`, which keeps the pinned staging buffer."""
    check_frames(images_bgr)
    uploader = uploader or Uploader(device)
    boxes = [Letterbox.fit(image.shape[1], image.shape[0], size) for image in images_bgr]
    batch = torch.empty((len(images_bgr), 3, size, size), dtype=dtype, device=device)
    for indices, group in uploader.groups(images_bgr).items():
        batch[list(indices)] = _letterbox_group(rgb_float(group), boxes[indices[0]],
                                                size).to(dtype)
    return batch, boxes


def boxes_to_source(boxes_xyxy: torch.Tensor, image_index: torch.Tensor,
                    letterboxes: Sequence[Letterbox]) -> torch.Tensor:
    """N x 4 boxes in network-input pixels of images `image_index` -> their source pixels,
    clipped to each frame: (box - pad) / scale."""
    table = torch.tensor([[lb.scale, lb.pad_x, lb.pad_y, lb.width, lb.height]
                          for lb in letterboxes], dtype=torch.float64, device=boxes_xyxy.device)
    rows = table[image_index]
    scale, pad = rows[:, 0:1], rows[:, 1:3].repeat(1, 2)
    source = (boxes_xyxy.to(torch.float64) - pad) / scale
    return clip_boxes(source, rows[:, 3:5].repeat(1, 2)).to(torch.float32)


def clip_boxes(boxes_xyxy: torch.Tensor, limits_xyxy: torch.Tensor) -> torch.Tensor:
    """Clip each box to 0..(width, height, width, height) given per box in `limits_xyxy`."""
    return torch.minimum(boxes_xyxy.clamp(min=0.0), limits_xyxy.to(boxes_xyxy.dtype))


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre-x, centre-y, width, height -> x1, y1, x2, y2 (last dimension)."""
    center, half_size = boxes[..., 0:2], boxes[..., 2:4] / 2.0
    return torch.cat((center - half_size, center + half_size), dim=-1)


def image_of_each(counts: Sequence[int], device) -> torch.Tensor:
    """The image index of every item when image i has counts[i] items, in image order. The
    total is known on the host (`output_size`), so repeat_interleave need not read it back from
    the device; the counts themselves go up in one small copy."""
    return torch.arange(len(counts), device=device).repeat_interleave(
        torch.tensor(counts, device=device), output_size=sum(counts))


def top_per_image(scores: torch.Tensor, image_index: torch.Tensor, batch_size: int,
                  max_detections: int) -> torch.Tensor:
    """Indices of at most `max_detections` best-scoring entries per image, grouped by image
    (ascending) and by score (descending) within an image. Vectorised: no per-image loop."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(image_index[order], stable=True)]
    counts = torch.bincount(image_index, minlength=batch_size)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=scores.device) - starts[image_index[order]]
    return order[rank < max_detections]


def split_by_image(boxes_xyxy: torch.Tensor, scores: torch.Tensor, class_ids: torch.Tensor,
                   image_index: torch.Tensor, batch_size: int) -> List[Detections]:
    """Flat detections grouped by image (as `top_per_image` leaves them) -> one Detections per
    image, with one device-to-host copy for the whole batch."""
    packed = torch.cat((boxes_xyxy.to(torch.float32), scores.to(torch.float32)[:, None]), 1)
    host = packed.cpu().numpy()
    ids = class_ids.cpu().numpy().astype(np.int64)
    images = image_index.cpu().numpy()
    ends = np.cumsum(np.bincount(images, minlength=batch_size))
    starts = ends - np.bincount(images, minlength=batch_size)
    return [Detections(boxes_xyxy=np.ascontiguousarray(host[start:end, :4]),
                       scores=np.ascontiguousarray(host[start:end, 4]),
                       class_ids=ids[start:end])
            for start, end in zip(starts, ends)]


def postprocess_dense(predictions: torch.Tensor, letterboxes: Sequence[Letterbox],
                      confidence_threshold: float, iou_threshold: float, max_detections: int,
                      allowed: Optional[torch.Tensor] = None) -> List[Detections]:
    """YOLO-style B x N x (4 + C) predictions (cx, cy, w, h in network pixels, then one score
    per class) -> Detections in source pixels.

    Each box takes its best class (single label). `allowed` is an optional bool tensor of
    length C on the same device: False drops that class. Candidates are mapped to source
    pixels first; those left with no area (wholly in the padding) are dropped; NMS then
    compares the boxes as they will be reported.
    """
    predictions = predictions.to(torch.float32)
    batch_size, num_classes = predictions.shape[0], predictions.shape[2] - 4
    scores, class_ids = predictions[..., 4:].max(dim=2)
    keep = scores >= confidence_threshold
    if allowed is not None:
        keep &= allowed[class_ids]
    image_index, box_index = keep.nonzero(as_tuple=True)
    boxes = boxes_to_source(cxcywh_to_xyxy(predictions[image_index, box_index, :4]),
                            image_index, letterboxes)
    scores, class_ids = scores[image_index, box_index], class_ids[image_index, box_index]
    visible = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero().squeeze(1)
    boxes, scores = boxes[visible], scores[visible]
    class_ids, image_index = class_ids[visible], image_index[visible]
    groups = image_index * num_classes + class_ids  # class-aware, never across images
    kept = torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)
    kept = kept[top_per_image(scores[kept], image_index[kept], batch_size, max_detections)]
    return split_by_image(boxes[kept], scores[kept], class_ids[kept], image_index[kept],
                          batch_size)


class Uploader:
    """Moves batches of camera frames to the model's device, grouped by size.

    On CUDA every frame travels by one non-blocking copy from page-locked (pinned) memory: a
    frame already in pinned memory (the shared-memory reader puts them there) goes as it is;
    any other is first copied into a pinned staging buffer that this uploader keeps and reuses
    batch after batch. From ordinary memory the driver would stage each copy itself and block
    (16 x 720p frames: 7.0 ms against 0.86 ms from pinned memory on the H200, ENVIRONMENT.md).
    The staging buffer is reused only after the previous batch's results were copied back to
    the host, which waits for every upload before it. On the CPU the frames are used in place.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._cuda = str(device).startswith('cuda')
        self._staging: Optional[torch.Tensor] = None  # pinned uint8, grown as needed

    def groups(self, images_bgr: Sequence[np.ndarray]) -> Dict[Tuple[int, ...], torch.Tensor]:
        """{indices of equal-sized frames: their n x H x W x 3 uint8 BGR pixels on the device}.
        Frames that are device tensors already (DeviceStager's) are used where they are."""
        by_size: Dict[Tuple[int, ...], List[int]] = {}
        for index, image in enumerate(images_bgr):
            on_device = isinstance(image, torch.Tensor)
            by_size.setdefault((on_device, *image.shape), []).append(index)
        staging: Optional[torch.Tensor] = None  # taken on the first frame that needs it
        offset = 0
        groups = {}
        for (on_device, *shape), indices in by_size.items():
            if on_device:
                stacked = torch.stack([images_bgr[i] for i in indices])
            elif not self._cuda:
                stacked = torch.from_numpy(np.stack([images_bgr[i] for i in indices]))
            else:
                stacked = torch.empty((len(indices), *shape), dtype=torch.uint8,
                                      device=self.device)
                for row, index in enumerate(indices):
                    source = torch.from_numpy(images_bgr[index])
                    if not source.is_pinned():
                        staging = staging if staging is not None else \
                            self._staging_for(images_bgr)
                        size = source.numel()
                        pinned = staging[offset:offset + size].view(shape)
                        pinned.numpy()[...] = images_bgr[index]  # releases the GIL
                        offset += size
                        source = pinned
                    stacked[row].copy_(source, non_blocking=True)
            groups[tuple(indices)] = stacked.to(self.device)
        return groups

    def _staging_for(self, images_bgr: Sequence[np.ndarray]) -> torch.Tensor:
        needed = sum(image.size for image in images_bgr if isinstance(image, np.ndarray))
        if self._staging is None or self._staging.numel() < needed:
            self._staging = torch.empty(needed, dtype=torch.uint8, pin_memory=True)
        return self._staging


def rgb_float(pixels_bgr: torch.Tensor) -> torch.Tensor:
    """n x H x W x 3 uint8 BGR -> n x 3 x H x W float RGB 0-1, on the same device."""
    return pixels_bgr.permute(0, 3, 1, 2).flip(1).to(torch.float32).div_(255.0)


def _letterbox_group(images: torch.Tensor, box: Letterbox, size: int) -> torch.Tensor:
    """n x 3 x h x w frames of one size -> n x 3 x size x size, sampled with the exact
    transform of `box` (see the module docstring)."""
    if box.scale == 1.0 and box.pad_x == 0.0 and box.pad_y == 0.0:
        return images  # already size x size
    centres = torch.arange(size, dtype=torch.float64, device=images.device) + 0.5
    source_x = (centres - box.pad_x) / box.scale  # continuous source coordinates
    source_y = (centres - box.pad_y) / box.scale
    inside = (((source_y >= 0) & (source_y < box.height))[:, None]
              & ((source_x >= 0) & (source_x < box.width))[None, :])
    grid_x = (2.0 * source_x / box.width - 1.0).to(torch.float32)  # align_corners=False
    grid_y = (2.0 * source_y / box.height - 1.0).to(torch.float32)
    grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing='ij')[::-1], dim=-1)
    grid = grid.expand(images.shape[0], size, size, 2)
    sampled = torch.nn.functional.grid_sample(images, grid, mode='bilinear',
                                              padding_mode='border', align_corners=False)
    return torch.where(inside, sampled, torch.full_like(sampled[:1, :1], PAD_VALUE))


def host_buffer_allocator(device: str) -> Callable[[int], np.ndarray]:
    """nbytes -> a host buffer for incoming frames: page-locked on CUDA (torch's caching host
    allocator reuses freed blocks, and waits for their pending uploads first), so that the
    Uploader sends it with one DMA and no staging copy; ordinary memory elsewhere."""
    if not str(device).startswith('cuda'):
        return lambda nbytes: np.empty(nbytes, dtype=np.uint8)
    return lambda nbytes: torch.empty(nbytes, dtype=torch.uint8, pin_memory=True).numpy()


# cudaHostRegisterPortable | cudaHostRegisterReadOnly: pinned for every CUDA context of the
# process (the registering thread may have none current), and the reader maps read-only
_CUDA_HOST_REGISTER = 1 | 8


def cuda_page_lock(array: np.ndarray) -> Optional[Callable[[], None]]:
    """Page-lock `array` (e.g. a camera's shared-memory slots, mapped read-only) for the GPU
    with cudaHostRegister, so that uploads from it are one DMA with no CPU copy; returns the
    function that unregisters it, or None when the driver refuses. Unregister only after every
    upload from it finished, and while the mapping is still referenced."""
    if array.size == 0:
        return None
    cudart = torch.cuda.cudart()
    address = array.__array_interface__['data'][0]
    if cuda_runtime_call(cudart.cudaHostRegister, address, array.nbytes, _CUDA_HOST_REGISTER):
        return None
    return lambda: cuda_runtime_call(cudart.cudaHostUnregister, address)


def cuda_runtime_call(function: Callable[..., object], *args: object) -> int:
    """Run one CUDA runtime call on a short-lived thread of its own and return its error code.
    The runtime keeps a failed call's error as its thread's "last error", and torch would
    raise it at that thread's next kernel launch; so a refusal stays with a thread that ends."""
    codes: List[int] = []
    thread = threading.Thread(target=lambda: codes.append(int(function(*args))),
                              name='cuda_runtime_call')
    thread.start()
    thread.join()
    return codes[0] if codes else -1


class DeviceStager:
    """Uploads the frames of a batch that are views into shared memory (InputFrame.intact is
    set) straight to the device with an Uploader (their memory is page-locked, so each is one
    non-blocking copy), waits for those copies alone, then keeps a frame only if its slot still
    held it (the camera did not start overwriting it meanwhile)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._uploader = Uploader(device)
        # torch warns once that a read-only array gives a tensor it must not write to: the
        # stager only ever reads these
        warnings.filterwarnings('ignore', message='The given NumPy array is not writable')

    def __call__(self, frames: Sequence[InputFrame]) -> List[Optional[InputFrame]]:
        """The batch with every in-place frame replaced by its upload (image: an H x W x 3
        uint8 tensor on the device), or by None where it was torn; other frames as they are."""
        result: List[Optional[InputFrame]] = list(frames)
        in_place = [index for index, frame in enumerate(frames) if frame.intact is not None]
        if not in_place:
            return result
        groups = self._uploader.groups([frames[index].image for index in in_place])
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        done.synchronize()  # the copies alone: nothing else is queued between batches
        for rows, pixels in groups.items():
            for row, uploaded in zip(rows, pixels.unbind(0)):
                frame = frames[in_place[row]]
                result[in_place[row]] = replace(frame, image=uploaded, intact=None) \
                    if frame.intact() else None
        return result
