"""A frame's source index, painted into the frame as a strip of black and white blocks.

The test bed paints every frame it serves with the index of its source frame (in the footage,
e.g. vtest.avi), so that any frame that comes out of the system at the far end (after H.264,
RTSP, camera_node, image_raw) can be traced back to the very source frame, whatever was dropped
on the way and however late it is. Writer (`paint`, the test bed) and reader (`read`, tests)
share this one module.

Layout, in the bottom-left corner, one row of square blocks of BLOCK_PX:
    [white] [black] [16 index bits, most significant first] [4 check bits]
The two marker blocks give the reader its threshold; the check bits (the complement of the sum
of the index's four nibbles, mod 16) catch any single misread block, so that `read` returns
None rather than a wrong index. Blocks of 8 px on the 8-px grid survive H.264 at the test bed's
bit rates untouched (a block reads as its centre's mean luma).
"""
from typing import List, Optional

import numpy as np

BLOCK_PX = 8
INDEX_BITS = 16
CHECK_BITS = 4
BLOCKS = 2 + INDEX_BITS + CHECK_BITS
STRIP_WIDTH_PX = BLOCKS * BLOCK_PX
MAX_INDEX = (1 << INDEX_BITS) - 1
MIN_CONTRAST = 96  # white marker minus black marker, in luma levels, for a readable strip


def _check(index: int) -> int:
    nibbles = sum((index >> shift) & 0xF for shift in range(0, INDEX_BITS, 4))
    return ~nibbles & 0xF


def _bits(index: int) -> List[int]:
    word = (index << CHECK_BITS) | _check(index)
    return [(word >> bit) & 1 for bit in range(INDEX_BITS + CHECK_BITS - 1, -1, -1)]


def paint(frame_bgr: np.ndarray, index: int) -> np.ndarray:
    """Paint `index` into `frame_bgr` (H x W x 3 uint8, changed in place and returned)."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f'index must be 0..{MAX_INDEX}, got {index}')
    height, width = frame_bgr.shape[:2]
    if width < STRIP_WIDTH_PX or height < BLOCK_PX:
        raise ValueError(f'a {width}x{height} frame is too small for the strip '
                         f'({STRIP_WIDTH_PX}x{BLOCK_PX} px)')
    top = height - BLOCK_PX
    for position, bit in enumerate([1, 0] + _bits(index)):
        left = position * BLOCK_PX
        frame_bgr[top:, left:left + BLOCK_PX] = 255 if bit else 0
    return frame_bgr


def read(frame_bgr: np.ndarray) -> Optional[int]:
    """The index painted into `frame_bgr`, or None when there is no readable strip."""
    height, width = frame_bgr.shape[:2]
    if width < STRIP_WIDTH_PX or height < BLOCK_PX:
        return None
    top = height - BLOCK_PX
    margin = BLOCK_PX // 4
    rows = frame_bgr[top + margin:height - margin].astype(np.float32)
    luma = rows.mean(axis=2) if rows.ndim == 3 else rows
    levels = [float(luma[:, p * BLOCK_PX + margin:(p + 1) * BLOCK_PX - margin].mean())
              for p in range(BLOCKS)]
    white, black = levels[0], levels[1]
    if white - black < MIN_CONTRAST:
        return None
    threshold = (white + black) / 2
    bits = [1 if level > threshold else 0 for level in levels[2:]]
    word = 0
    for bit in bits:
        word = (word << 1) | bit
    index, check = word >> CHECK_BITS, word & ((1 << CHECK_BITS) - 1)
    return index if check == _check(index) else None
