"""The batched versions of torchvision's per-image loops (core/models/torchvision_batched.py)
give exactly what torchvision's own give: the transform on mixed frame sizes in any order, the
R-CNN filters on random inputs that exercise every filter (boxes outside the image, too small,
below the score threshold, images left with nothing, images of different sizes), and a whole
model through the back-end; the back-end installs them where the model has the loops."""
import numpy as np
import pytest
import torch
from torchvision.models import detection
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from multicam_ros.core.models import ModelConfig, load_detector, torchvision_batched

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)]
SHAPES = [(320, 427), (320, 569), (240, 320), (320, 427)]  # (height, width) after the resize


@pytest.fixture(params=[None, 300], ids=['one_nms', 'nms_in_chunks'])
def nms_chunk(request, monkeypatch):
    """One NMS call for the batch, or calls of whole images of at most 300 boxes (fewer than
    one image may have: such an image gets a call of its own)."""
    if request.param:
        monkeypatch.setattr(torchvision_batched, '_NMS_CHUNK_BOXES', request.param)


@pytest.fixture(scope='module')
def rcnn():
    return detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None,
                                                           weights_backbone=None).eval()


def _same(expected, got):
    """Two tuples of per-image tensor lists are equal, image by image, exactly."""
    assert len(expected) == len(got)
    for want_list, got_list in zip(expected, got):
        assert len(want_list) == len(got_list)
        for want, have in zip(want_list, got_list):
            assert want.dtype == have.dtype and want.shape == have.shape
            assert torch.equal(want, have)


def _proposal_inputs(device, num_images, levels=(2000, 500, 125), seed=0):
    generator = torch.Generator().manual_seed(seed)
    anchors = sum(levels)
    corner = torch.rand(num_images, anchors, 2, generator=generator) * 700 - 60  # some outside
    size = torch.rand(num_images, anchors, 2, generator=generator) * 200
    size[:, ::7] = 0.0005  # below the RPN's min_size
    proposals = torch.cat([corner, corner + size], -1)
    proposals[1:] = proposals[0]  # the same boxes in every image: none may suppress another's
    objectness = torch.randn(num_images * anchors, 1, generator=generator) * 3
    if num_images > 2:
        objectness[2 * anchors:3 * anchors] = -20  # image 2: no proposal passes the threshold
    return proposals.to(device), objectness.to(device), list(levels)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('num_images', [1, 4])
def test_proposal_filter_equals_torchvisions_loop(rcnn, device, num_images, nms_chunk):
    rpn = rcnn.rpn
    rpn.score_thresh = 0.05  # torchvision's default is 0: make the threshold bite...
    rpn._post_nms_top_n = dict(rpn._post_nms_top_n, testing=100)  # ...and the limit
    try:
        proposals, objectness, levels = _proposal_inputs(device, num_images)
        shapes = SHAPES[:num_images]
        expected = RegionProposalNetwork.filter_proposals(rpn, proposals, objectness, shapes,
                                                          levels)
        got = torchvision_batched.filter_proposals(rpn, proposals, objectness, shapes, levels)
    finally:
        rpn.score_thresh, rpn._post_nms_top_n['testing'] = 0.0, 150
    _same(expected, got)
    counts = [len(boxes) for boxes in got[0]]
    assert max(counts) == 100  # the per-image limit was reached...
    if num_images > 2:
        assert counts[2] == 0  # ...and one image kept nothing


@pytest.mark.parametrize('device', DEVICES)
def test_detection_filter_equals_torchvisions_loop(rcnn, device, nms_chunk):
    heads, generator = rcnn.roi_heads, torch.Generator().manual_seed(1)
    counts, num_classes = [150, 0, 37, 150], 91
    proposals = [torch.cat([torch.rand(n, 2, generator=generator) * 400,
                            torch.rand(n, 2, generator=generator) * 300 + 300], 1).to(device)
                 for n in counts]
    logits = (torch.randn(sum(counts), num_classes, generator=generator) * 3).to(device)
    regression = torch.randn(sum(counts), num_classes * 4, generator=generator).to(device)
    expected = RoIHeads.postprocess_detections(heads, logits, regression, proposals, SHAPES)
    got = torchvision_batched.postprocess_detections(heads, logits, regression, proposals, SHAPES)
    _same(expected, got)
    kept = [len(boxes) for boxes in got[0]]
    assert kept[0] == heads.detections_per_img and kept[1] == 0 and 0 < kept[2]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('fixed_size', [None, (320, 320)])  # the R-CNNs' resize, and SSD's
def test_transform_equals_torchvisions_loop(rcnn, device, fixed_size):
    transform = rcnn.transform
    generator = torch.Generator().manual_seed(2)
    sizes = [(720, 1280), (480, 640), (720, 1280), (240, 320), (720, 1280), (720, 1280)]
    images = [torch.rand(3, h, w, generator=generator).to(device) for h, w in sizes]
    transform.fixed_size = fixed_size
    try:
        expected, _ = type(transform).forward(transform, images)
        got, _ = torchvision_batched.transform_forward(transform, images)
        single, _ = torchvision_batched.transform_forward(transform, images[1:2])
        expected_single, _ = type(transform).forward(transform, images[1:2])
    finally:
        transform.fixed_size = None
    assert got.image_sizes == expected.image_sizes and got.tensors.shape[0] == len(sizes)
    assert torch.equal(got.tensors, expected.tensors)
    assert single.image_sizes == expected_single.image_sizes
    assert torch.equal(single.tensors, expected_single.tensors)
    detections = [{'boxes': torch.rand(n, 4, generator=generator).to(device) * 300,
                   'scores': torch.rand(n, generator=generator).to(device),
                   'labels': torch.arange(n, device=device)} for n in (5, 0, 7, 1, 3, 2)]
    originals = [tuple(size) for size in sizes]
    want = type(transform).postprocess(transform, [dict(d) for d in detections],
                                       expected.image_sizes, originals)
    have = torchvision_batched.transform_postprocess(transform, [dict(d) for d in detections],
                                                     got.image_sizes, originals)
    for a, b in zip(want, have):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_the_torchvision_backend_installs_the_batched_loops_where_the_model_has_them():
    def config(name):
        return ModelConfig(backend='torchvision', name=name, weights='none', device='cpu')

    model = load_detector(config('fasterrcnn_mobilenet_v3_large_320_fpn')).model
    assert model.rpn.filter_proposals.__func__ is torchvision_batched.filter_proposals
    assert model.roi_heads.postprocess_detections.__func__ is \
        torchvision_batched.postprocess_detections
    assert model.transform.forward.__func__ is torchvision_batched.transform_forward
    torchvision_batched.uninstall(model)
    assert 'filter_proposals' not in vars(model.rpn) and 'forward' not in vars(model.transform)
    every = ['transform.forward', 'transform.postprocess', 'rpn.filter_proposals',
             'roi_heads.postprocess_detections']
    assert torchvision_batched.install(model) == every
    assert torchvision_batched.install(detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None)) == every
    assert torchvision_batched.install(detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None)) == every[:2]
    assert torchvision_batched.install(torch.nn.Linear(2, 2)) == []


def _small_rcnn():
    """A Faster R-CNN on a two-layer backbone. The random-weight mobilenet's features vanish
    (std ~1e-8), so that many candidates tie on score and NMS may keep either of two equal
    boxes; this one's scores are all distinct, so its results are defined exactly."""
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 7, stride=8, padding=3),
                                   torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=2,
                                                                    padding=1))
    backbone.out_channels = 32
    anchors = AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))
    return detection.FasterRCNN(backbone, num_classes=91, min_size=320, max_size=640,
                                rpn_anchor_generator=anchors, box_score_thresh=0.0).eval()


@pytest.mark.parametrize('device, half', [('cpu', False),
                                          pytest.param('cuda', False, marks=pytest.mark.gpu),
                                          pytest.param('cuda', True, marks=pytest.mark.gpu)])
def test_a_batch_through_the_backend_gives_the_loops_detections(device, half):
    """The whole model through the back-end's infer, frames of three sizes in one batch (one
    size twice, apart), fp16 under autocast too."""
    torch.manual_seed(0)
    detector = load_detector(ModelConfig(
        backend='torchvision', name='fasterrcnn_mobilenet_v3_large_320_fpn', weights='none',
        device=device, confidence_threshold=0.0, half=half))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
              for w, h in ((640, 480), (1280, 720), (320, 240), (640, 480))]
    detector.model = _small_rcnn().to(device)
    expected = detector.infer(frames)  # torchvision's own loops
    assert len(torchvision_batched.install(detector.model)) == 4
    got = detector.infer(frames)
    assert [len(result) for result in expected] == [100] * len(frames)
    for want, have in zip(expected, got):
        assert np.array_equal(want.scores, have.scores)
        assert len(np.unique(want.scores)) == len(want.scores)  # no ties: one right answer
        assert np.array_equal(want.boxes_xyxy, have.boxes_xyxy)
        assert np.array_equal(want.class_ids, have.class_ids)
