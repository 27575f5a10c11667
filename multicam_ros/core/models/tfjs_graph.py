"""A TF.js graph model (model.json + weight files) read and converted into a torch.fx module.
ROS-free.

`read_tfjs_graph` reads the topology and the weights manifest (float32, int32, float16-quantised
weights: float16 values become float32, exactly). `convert_graph` interprets the graph node by
node into a `torch.fx.GraphModule` for the ops NanoDet-g's graph (made by onnx-tf) uses:
Conv2D, Add/AddV2/BiasAdd, LeakyRelu, Relu, Sigmoid, Pad/PadV2, MaxPool, ConcatV2, SplitV,
Transpose, Reshape, ResizeBilinear, Identity; Const, Cast, SparseToDense and Adds of constants
are folded at conversion. Any other op, or an attribute value it does not handle, is a
ValueError that names the node. Along the way:
- layouts: onnx-tf wraps every NHWC op in NCHW<->NHWC Transposes; here each tensor carries its
  logical permutation, Transposes cost nothing, and every conv runs on NCHW data, so the torch
  graph has almost no permutes;
- a zero Pad before a VALID Conv2D becomes the conv's padding, a -inf PadV2 before a MaxPool
  becomes the pool's padding (which pads with -inf), and a Conv2D's bias Add is fused into it;
- ResizeBilinear with half_pixel_centers is bilinear with align_corners=False;
- every op is an aten operator called directly, so the scripted module is portable across
  torch versions;
- Reshape targets that hard-code batch 1 (NanoDet-g's [1, 80, -1]: a batch of N would
  silently fold into the anchor axis) take the input's batch size instead, so the module gives
  a batch of N the same as N single runs. A Transpose that moves the batch axis, or a Reshape
  that does not keep it first, is an error rather than a silent change of meaning.
"""
import base64
import json
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.fx

# The graph calls aten operators directly, not torch.nn.functional: TorchScript inlines those
# Python functions, which name operators of this torch version (a file saved by torch 2.14
# would not load in 2.11), while an aten operator's schema is stable.
_ATEN = torch.ops.aten


@dataclass
class TfjsGraph:
    """A TF.js graph model: its nodes in file order, its constants, inputs and outputs."""

    nodes: List[dict]
    constants: Dict[str, np.ndarray]
    inputs: List[str]
    outputs: List[str]  # signature order as in the file, e.g. 'Identity_2'
    metadata: Dict[str, Any]


def read_tfjs_graph(model_json: Union[str, Path]) -> TfjsGraph:
    """Read `model.json` and the weight files its manifest names (next to it)."""
    path = Path(model_json)
    spec = json.loads(path.read_text())
    if spec.get('format') != 'graph-model':
        raise ValueError(f'{path}: format {spec.get("format")!r}; expected a TF.js graph-model')
    constants: Dict[str, np.ndarray] = {}
    for group in spec['weightsManifest']:
        data = b''.join((path.parent / name).read_bytes() for name in group['paths'])
        offset = 0
        for weight in group['weights']:
            array, offset = _read_weight(weight, data, offset, path)
            constants[weight['name']] = array
        if offset != len(data):
            raise ValueError(f'{path}: the manifest covers {offset} of {len(data)} bytes of '
                             f'{group["paths"]}')
    signature = spec.get('signature', {})
    strip = lambda name: name.split(':')[0]  # noqa: E731 - 'Identity:0' -> 'Identity'
    metadata = {key: spec[key] for key in ('format', 'generatedBy', 'convertedBy') if key in spec}
    return TfjsGraph(nodes=spec['modelTopology']['node'], constants=constants,
                     inputs=[strip(name) for name in signature.get('inputs', {})],
                     outputs=[strip(name) for name in signature.get('outputs', {})],
                     metadata=metadata)


def _read_weight(weight: dict, data: bytes, offset: int, path: Path) -> Tuple[np.ndarray, int]:
    """One manifest entry -> (array in its original dtype, offset after it)."""
    shape = [int(size) for size in weight['shape']]
    count = int(np.prod(shape)) if shape else 1
    quantization = weight.get('quantization')
    dtypes = {'float32': np.float32, 'int32': np.int32, 'bool': np.bool_}
    if quantization:
        if quantization.get('dtype') != 'float16':
            raise ValueError(f'{path}: weight {weight["name"]}: quantization '
                             f'{quantization.get("dtype")!r} is not supported (float16 is)')
        stored = np.float16
    elif weight['dtype'] in dtypes:
        stored = dtypes[weight['dtype']]
    else:
        raise ValueError(f'{path}: weight {weight["name"]}: dtype {weight["dtype"]!r} '
                         'is not supported')
    size = count * np.dtype(stored).itemsize
    if offset + size > len(data):
        raise ValueError(f'{path}: weight {weight["name"]} runs past the end of the weights')
    array = np.frombuffer(data, stored, count, offset).reshape(shape)
    if stored is np.float16:
        array = array.astype(np.float32)  # exact: every float16 is a float32
    return array.copy(), offset + size


@dataclass
class _Tensor:
    """A graph tensor during conversion: logical (TF) value = physical.permute(perm)."""

    node: torch.fx.Node
    perm: Tuple[int, ...]


@dataclass
class _Padded:
    """A Pad not yet applied: consumers that can pad themselves (conv, pool) take it as is."""

    base: _Tensor
    pads: np.ndarray  # logical dims x (before, after)
    value: float


_Value = Union[_Tensor, _Padded, np.ndarray]
_NHWC_AS_NCHW = (0, 2, 3, 1)  # logical NHWC held as physical NCHW


class _Converter:
    """Builds a torch.fx graph from a TfjsGraph; runs each op once on a batch-1 example as it
    goes, to know shapes (channel counts, groups, batch checks)."""

    def __init__(self, tfjs: TfjsGraph, example: torch.Tensor) -> None:
        self.tfjs = tfjs
        self.graph = torch.fx.Graph()
        self.root = torch.nn.Module()
        self.values: Dict[str, _Value] = {}
        self.examples: Dict[torch.fx.Node, Any] = {}
        self.consumers: Dict[str, List[dict]] = {}
        self.convs = 0
        self.constants = 0
        for node in tfjs.nodes:
            for name in node.get('input', []):
                self.consumers.setdefault(_base_name(name), []).append(node)
        self.example = example

    def convert(self) -> torch.fx.GraphModule:
        handlers = {
            'Placeholder': self._placeholder, 'Const': self._const, 'Identity': self._identity,
            'Transpose': self._transpose, 'Conv2D': self._conv2d, 'Add': self._add,
            'AddV2': self._add, 'BiasAdd': self._add, 'LeakyRelu': self._leaky_relu,
            'Relu': self._relu, 'Sigmoid': self._sigmoid, 'Pad': self._pad, 'PadV2': self._pad,
            'MaxPool': self._max_pool, 'ConcatV2': self._concat, 'SplitV': self._split,
            'Reshape': self._reshape, 'ResizeBilinear': self._resize_bilinear,
            'SparseToDense': self._sparse_to_dense, 'Cast': self._cast,
        }
        for node in self._ordered():
            if node['name'] in self.values:
                continue  # produced already (a bias Add fused into its conv)
            handler = handlers.get(node['op'])
            if handler is None:
                raise ValueError(f'node {node["name"]}: op {node["op"]} is not supported by '
                                 'this converter')
            try:
                handler(node)
            except (ValueError, KeyError, IndexError) as exc:
                if str(exc).startswith('node '):
                    raise
                raise ValueError(f'node {node["name"]} ({node["op"]}): {exc}') from exc
        outputs = tuple(self._logical(self._tensor(self.values[name]))
                        for name in self.tfjs.outputs)
        self.graph.output(outputs)
        module = torch.fx.GraphModule(self.root, self.graph, class_name='NanoDetGraph')
        module.graph.lint()
        return module

    # --- bookkeeping
    def _ordered(self) -> List[dict]:
        """Nodes in an order where every input comes first (the file is not in that order)."""
        by_name = {node['name']: node for node in self.tfjs.nodes}
        done: Dict[str, bool] = {}
        order: List[dict] = []
        for start in self.tfjs.nodes:
            stack = [(start, False)]
            while stack:
                node, expanded = stack.pop()
                if done.get(node['name']):
                    continue
                if expanded:
                    done[node['name']] = True
                    order.append(node)
                    continue
                stack.append((node, True))
                for name in node.get('input', []):
                    name = _base_name(name)
                    if name not in by_name:
                        raise ValueError(f'node {node["name"]}: input {name} does not exist')
                    if not done.get(name):
                        stack.append((by_name[name], False))
        return order

    def _input(self, node: dict, index: int) -> Tuple[_Value, str]:
        name = node['input'][index]
        base, _, port = name.partition(':')
        value = self.values[base]
        if port not in ('', '0'):
            value = self.values[f'{base}:{port}']
        return value, name

    def _const_input(self, node: dict, index: int) -> np.ndarray:
        value, name = self._input(node, index)
        if not isinstance(value, np.ndarray):
            raise ValueError(f'input {name} must be a constant')
        return value

    def _call(self, target: Any, args: tuple, kwargs: Optional[dict] = None,
              kind: str = 'function') -> torch.fx.Node:
        """Emit one fx node and compute its value on the example."""
        kwargs = kwargs or {}
        if kind == 'function':
            node = self.graph.call_function(target, args, kwargs)
        else:
            node = self.graph.call_method(target, args, kwargs)
        real_args = torch.fx.node.map_arg(args, lambda n: self.examples[n])
        real_kwargs = torch.fx.node.map_arg(kwargs, lambda n: self.examples[n])
        if kind == 'function':
            self.examples[node] = target(*real_args, **real_kwargs)
        else:
            self.examples[node] = getattr(real_args[0], target)(*real_args[1:], **real_kwargs)
        return node

    def _attribute(self, name: str, array: np.ndarray) -> torch.fx.Node:
        """A float constant of the graph as a parameter of the module (moves with .to/.half)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        self.root.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
        node = self.graph.get_attr(name)
        self.examples[node] = getattr(self.root, name)
        return node

    def _shape(self, value: _Tensor) -> Tuple[int, ...]:
        physical = self.examples[value.node].shape
        return tuple(int(physical[axis]) for axis in value.perm)

    def _as_layout(self, value: _Tensor, perm: Tuple[int, ...]) -> torch.fx.Node:
        """A node holding `value` physically so that logical = physical.permute(perm)."""
        inverse = tuple(int(axis) for axis in np.argsort(perm))
        dims = tuple(value.perm[inverse[axis]] for axis in range(len(perm)))
        if dims == tuple(range(len(dims))):
            return value.node
        return self._call('permute', (value.node, dims), kind='method')

    def _logical(self, value: _Tensor) -> torch.fx.Node:
        return self._as_layout(value, tuple(range(len(value.perm))))

    def _tensor(self, value: _Value) -> _Tensor:
        """Apply a pending Pad; constants are not tensors of the graph here."""
        if isinstance(value, _Padded):
            base = value.base
            pads: List[Any] = []
            for axis in reversed(range(len(base.perm))):  # last physical dim first
                logical = base.perm.index(axis)
                pads += [int(value.pads[logical, 0]), int(value.pads[logical, 1])]
            node = self._call(_ATEN.constant_pad_nd, (base.node, pads, float(value.value)))
            return _Tensor(node, base.perm)
        if isinstance(value, np.ndarray):
            raise ValueError('a constant where a tensor of the graph is expected')
        return value

    # --- ops
    def _placeholder(self, node: dict) -> None:
        dims = node['attr']['shape']['shape']['dim']
        shape = tuple(int(dim['size']) for dim in dims)
        if tuple(self.example.shape) != shape:
            raise ValueError(f'input shape {shape}, example {tuple(self.example.shape)}')
        placeholder = self.graph.placeholder(node['name'])
        self.examples[placeholder] = self.example
        self.values[node['name']] = _Tensor(placeholder, tuple(range(len(shape))))

    def _const(self, node: dict) -> None:
        if node['name'] not in self.tfjs.constants:
            raise ValueError('constant without a weight in the manifest')
        self.values[node['name']] = self.tfjs.constants[node['name']]

    def _identity(self, node: dict) -> None:
        self.values[node['name']] = self._input(node, 0)[0]

    def _cast(self, node: dict) -> None:
        self.values[node['name']] = self._const_input(node, 0).copy()

    def _sparse_to_dense(self, node: dict) -> None:
        indices, shape, values, default = (self._const_input(node, index) for index in range(4))
        dense = np.full(shape.astype(np.int64), default, dtype=np.int64)
        if indices.size:
            dense[tuple(indices.reshape(len(indices), -1).T)] = values
        self.values[node['name']] = dense

    def _transpose(self, node: dict) -> None:
        value = self._input(node, 0)[0]
        perm = tuple(int(axis) for axis in self._const_input(node, 1))
        if perm[0] != 0:
            raise ValueError(f'permutation {perm} moves the batch axis')
        if isinstance(value, _Padded):  # keep the Pad pending: a conv may still take it
            base = _Tensor(value.base.node, tuple(value.base.perm[axis] for axis in perm))
            self.values[node['name']] = _Padded(base, value.pads[list(perm)], value.value)
            return
        value = self._tensor(value)
        self.values[node['name']] = _Tensor(value.node, tuple(value.perm[axis] for axis in perm))

    def _add(self, node: dict) -> None:
        (a, _), (b, _) = self._input(node, 0), self._input(node, 1)
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            self.values[node['name']] = (a.astype(np.int64) + b.astype(np.int64)
                                         if a.dtype.kind == 'i' else a + b)
            return
        if isinstance(a, np.ndarray):
            a, b = b, a
        left = self._tensor(a)
        if isinstance(b, np.ndarray):
            rank = len(left.perm)
            logical = b.reshape((1,) * (rank - b.ndim) + b.shape)
            self.constants += 1
            other: Any = self._attribute(f'constant{self.constants}',
                                         logical.transpose(np.argsort(left.perm)))
        else:
            right = self._tensor(b)
            if self._shape(left) != self._shape(right):
                raise ValueError(f'shapes {self._shape(left)} and {self._shape(right)} differ')
            other = self._as_layout(right, left.perm)
        self.values[node['name']] = _Tensor(self._call(operator.add, (left.node, other)),
                                            left.perm)

    def _unary(self, node: dict, function: Any, *args: Any) -> None:
        value = self._tensor(self._input(node, 0)[0])
        self.values[node['name']] = _Tensor(self._call(function, (value.node,) + args),
                                            value.perm)

    def _leaky_relu(self, node: dict) -> None:
        self._unary(node, _ATEN.leaky_relu, float(node['attr']['alpha']['f']))

    def _relu(self, node: dict) -> None:
        self._unary(node, _ATEN.relu)

    def _sigmoid(self, node: dict) -> None:
        self._unary(node, _ATEN.sigmoid)

    def _pad(self, node: dict) -> None:
        value = self._tensor(self._input(node, 0)[0])
        pads = self._const_input(node, 1).astype(np.int64)
        fill = float(self._const_input(node, 2)) if node['op'] == 'PadV2' else 0.0
        if pads.shape != (len(value.perm), 2) or (pads < 0).any():
            raise ValueError(f'paddings {pads.tolist()}')
        self.values[node['name']] = _Padded(value, pads, fill)

    def _spatial(self, node: dict, fill: float) -> Tuple[torch.fx.Node, Tuple[int, int],
                                                         Tuple[int, ...]]:
        """(NCHW input node, padding the op applies itself, logical perm of the result) for an
        op with a data_format; a foldable pending Pad becomes the op's own padding."""
        data_format = _text(node['attr'].get('data_format', {'s': ''})) or 'NHWC'
        if data_format not in ('NHWC', 'NCHW'):
            raise ValueError(f'data_format {data_format}')
        perm = _NHWC_AS_NCHW if data_format == 'NHWC' else (0, 1, 2, 3)
        spatial_axes = (1, 2) if data_format == 'NHWC' else (2, 3)
        value = self._input(node, 0)[0]
        padding = (0, 0)
        if isinstance(value, _Padded):
            pads = value.pads
            others = [axis for axis in range(4) if axis not in spatial_axes]
            symmetric = all(pads[axis, 0] == pads[axis, 1] for axis in spatial_axes)
            if value.value == fill and symmetric and not pads[others].any():
                padding = (int(pads[spatial_axes[0], 0]), int(pads[spatial_axes[1], 0]))
                value = value.base
        tensor = self._tensor(value)
        return self._as_layout(tensor, perm), padding, perm

    def _conv2d(self, node: dict) -> None:
        attr = node['attr']
        if _text(attr['padding']) != 'VALID':
            raise ValueError(f'padding {_text(attr["padding"])} (only VALID)')
        source, padding, perm = self._spatial(node, 0.0)
        weight = self._const_input(node, 1)  # H x W x in x out
        nchw_axes = (0, 3, 1, 2) if perm == _NHWC_AS_NCHW else (0, 1, 2, 3)
        strides = _ints(attr['strides'])
        dilations = _ints(attr.get('dilations', {'list': {'i': [1, 1, 1, 1]}}))
        channels = int(self.examples[source].shape[1])
        if channels % weight.shape[2]:
            raise ValueError(f'{channels} input channels, weight {weight.shape}')
        stride = (strides[nchw_axes[2]], strides[nchw_axes[3]])
        dilation = (dilations[nchw_axes[2]], dilations[nchw_axes[3]])
        groups = channels // weight.shape[2]
        index = self.convs
        self.convs += 1
        weight_node = self._attribute(f'conv{index}_weight', weight.transpose(3, 2, 0, 1))
        bias, fused = self._bias_of(node, weight.shape[3])
        bias_node = None if bias is None else self._attribute(f'conv{index}_bias', bias)
        output = self._call(_ATEN.conv2d, (source, weight_node, bias_node, stride, padding,
                                           dilation, groups))
        self.values[node['name']] = _Tensor(output, perm)
        if fused is not None:
            self.values[fused] = self.values[node['name']]

    def _bias_of(self, node: dict, channels: int) -> Tuple[Optional[np.ndarray], Optional[str]]:
        """(bias, name of the Add that adds it) when the conv's one consumer adds a constant
        vector of `channels` to it, else (None, None)."""
        consumers = self.consumers.get(node['name'], [])
        if len(consumers) != 1 or consumers[0]['op'] not in ('Add', 'AddV2', 'BiasAdd'):
            return None, None
        add = consumers[0]
        other = [name for name in add['input'] if _base_name(name) != node['name']]
        if len(other) != 1 or _base_name(other[0]) not in self.tfjs.constants:
            return None, None
        bias = self.tfjs.constants[_base_name(other[0])]
        if bias.shape != (channels,):
            return None, None
        return bias, add['name']

    def _max_pool(self, node: dict) -> None:
        attr = node['attr']
        if _text(attr['padding']) != 'VALID':
            raise ValueError(f'padding {_text(attr["padding"])} (only VALID)')
        source, padding, perm = self._spatial(node, float('-inf'))
        nchw_axes = (0, 3, 1, 2) if perm == _NHWC_AS_NCHW else (0, 1, 2, 3)
        ksize, strides = _ints(attr['ksize']), _ints(attr['strides'])
        kernel = (ksize[nchw_axes[2]], ksize[nchw_axes[3]])
        if any(pad > size // 2 for pad, size in zip(padding, kernel)):
            raise ValueError(f'padding {padding} larger than half the kernel {kernel}')
        stride = (strides[nchw_axes[2]], strides[nchw_axes[3]])
        output = self._call(_ATEN.max_pool2d, (source, kernel, stride, padding, (1, 1), False))
        self.values[node['name']] = _Tensor(output, perm)

    def _concat(self, node: dict) -> None:
        count = int(node['attr']['N']['i'])
        values = [self._tensor(self._input(node, index)[0]) for index in range(count)]
        axis = int(self._const_input(node, count))
        axis = axis + len(values[0].perm) if axis < 0 else axis
        nodes = [self._as_layout(value, values[0].perm) for value in values]
        output = self._call(_ATEN.cat, (nodes, values[0].perm[axis]))
        self.values[node['name']] = _Tensor(output, values[0].perm)

    def _split(self, node: dict) -> None:
        value = self._tensor(self._input(node, 0)[0])
        sizes = [int(size) for size in self._const_input(node, 1)]
        axis = int(self._const_input(node, 2))
        axis = axis + len(value.perm) if axis < 0 else axis
        if -1 in sizes or sum(sizes) != self._shape(value)[axis]:
            raise ValueError(f'sizes {sizes} for an axis of {self._shape(value)[axis]}')
        parts = self._call(_ATEN.split_with_sizes, (value.node, sizes, value.perm[axis]))
        for index in range(len(sizes)):
            part = self._call(operator.getitem, (parts, index))
            self.values[f'{node["name"]}:{index}' if index else node['name']] = _Tensor(
                part, value.perm)

    def _reshape(self, node: dict) -> None:
        value = self._tensor(self._input(node, 0)[0])
        target = [int(size) for size in self._const_input(node, 1)]
        shape = self._shape(value)
        if shape[0] != 1 or not target or target[0] != 1:
            raise ValueError(f'reshape {shape} -> {target}: the batch axis is not kept first')
        logical = self._logical(value)
        batch = self._call('size', (logical, 0), kind='method')
        output = self._call('reshape', (logical, [batch] + target[1:]), kind='method')
        self.values[node['name']] = _Tensor(output, tuple(range(len(target))))

    def _resize_bilinear(self, node: dict) -> None:
        attr = node['attr']
        align_corners = bool(attr.get('align_corners', {}).get('b', False))
        half_pixel = bool(attr.get('half_pixel_centers', {}).get('b', False))
        if not align_corners and not half_pixel:
            raise ValueError('legacy (asymmetric) ResizeBilinear is not supported')
        value = self._tensor(self._input(node, 0)[0])
        size = [int(item) for item in self._const_input(node, 1)]
        source = self._as_layout(value, _NHWC_AS_NCHW)
        output = self._call(_ATEN.upsample_bilinear2d, (source, size, align_corners, None))
        self.values[node['name']] = _Tensor(output, _NHWC_AS_NCHW)


def _base_name(name: str) -> str:
    return name.split(':')[0].lstrip('^')


def _text(attr: dict) -> str:
    return base64.b64decode(attr.get('s', '')).decode()


def _ints(attr: dict) -> List[int]:
    return [int(item) for item in attr['list']['i']]


def convert_graph(tfjs: TfjsGraph) -> torch.fx.GraphModule:
    """The graph as a torch.fx module: one input of the placeholder's shape with any batch
    size, the outputs in the file's signature order."""
    if len(tfjs.inputs) != 1:
        raise ValueError(f'expected one input, the graph has {tfjs.inputs}')
    placeholder = next(node for node in tfjs.nodes if node['op'] == 'Placeholder')
    shape = [int(dim['size']) for dim in placeholder['attr']['shape']['shape']['dim']]
    example = torch.zeros(shape)
    with torch.no_grad():
        return _Converter(tfjs, example).convert()
