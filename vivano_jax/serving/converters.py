"""A `ScoreFunction` -> a model file of one format, each with a symbolic batch size.

  onnx         jax2onnx, from the function's jaxpr (see `to_onnx`): ONNX opset 23, for
               onnxruntime or any ONNX runtime; weights and statistics are initializers
  saved_model  jax2tf (native serialization: the function's StableHLO in an XlaCallModule op)
               in a tf.function with the signature 'serving_default' (images uint8 or float32
               [None, S, S, C] -> {output: tensor}); weights are TF variables
  jax          jax.export: the serialized StableHLO of the function (jax.export.deserialize,
               then .call), weights as constants

Why jax2onnx and not jax2tf + tf2onnx: jax2tf (JAX 0.10) only serializes natively (its
`native_serialization=False` is ignored), so its graph is one XlaCallModule op holding StableHLO,
which tf2onnx cannot translate ('pass1 convert failed ... XlaCallModule'); jax2onnx converts the
JAX primitives themselves. It converts the jaxpr traced beforehand (`jax.make_jaxpr`), not the
Python function: traced through the function, jax2onnx swaps `jax.image.resize` for its own ONNX
Resize, which has no antialiasing and no symbolic batch size; from the jaxpr it converts the
primitives JAX itself computes, so the model stays the JAX scorer (checked by `export_model` on
every export). The SavedModel is written with jax2tf directly rather than through orbax-export,
which wraps the same conversion in a serving-config layer that one function with no pre- or
post-processing does not need.

SavedModels and serialized JAX functions are lowered for `platforms` (default CPU and CUDA), so
the same file serves on either.
"""

import contextlib
import logging
import pathlib
from typing import Any, Iterator, Optional, Sequence

import jax
from jax import export as jax_export
from jax import lax
import jax.extend as jex

from vivano_jax import errors
from vivano_jax.serving import model_dir
from vivano_jax.serving import score_function

BATCH = 'N'  # The symbolic batch dimension's name.


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
  """Converters log every step at DEBUG and tracebacks of their optional plugins at WARNING."""
  saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
  for logger, _ in saved:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for logger, level in saved:
      logger.setLevel(level)


def _symbolic_input(sf: score_function.ScoreFunction) -> jax.ShapeDtypeStruct:
  (batch,) = jax_export.symbolic_shape(BATCH)
  return sf.input_spec(batch)


# Primitives of this JAX that jax2onnx 0.13 has no lowering for, in primitives it has.
_REWRITES = {
    'stack': lambda *xs, axis: [lax.concatenate([lax.expand_dims(x, (axis,)) for x in xs], axis)],
    'unstack': lambda x, axis: [lax.squeeze(lax.slice_in_dim(x, i, i + 1, axis=axis), (axis,))
                                for i in range(x.shape[axis])],
}
# Call primitives and the parameter holding the jaxpr they call: inlined.
_CALLS = {'jit': 'jaxpr', 'pjit': 'jaxpr', 'closed_call': 'call_jaxpr', 'core_call': 'call_jaxpr',
          'custom_jvp_call': 'call_jaxpr', 'custom_vjp_call': 'call_jaxpr',
          'checkpoint': 'jaxpr', 'remat': 'jaxpr'}


def _evaluate(jaxpr, consts: Sequence[Any], *args: Any) -> list[Any]:
  """Evaluates `jaxpr` as jax.core.eval_jaxpr does, but inlines the jaxprs that call primitives
  call (jit, custom_jvp, remat) and rewrites the primitives in `_REWRITES`: jax2onnx then sees one
  flat jaxpr of primitives it converts."""
  env = {}
  read = lambda v: v.val if isinstance(v, jex.core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    args_in = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name in _CALLS:
      inner = eqn.params[_CALLS[name]]
      if isinstance(inner, jex.core.ClosedJaxpr):
        outs = _evaluate(inner.jaxpr, inner.consts, *args_in)
      else:
        outs = _evaluate(inner, [], *args_in)
    elif name in _REWRITES:
      outs = _REWRITES[name](*args_in, **eqn.params)
    else:
      outs = eqn.primitive.bind(*args_in, **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _name_outputs(model, names: Sequence[str]):
  """Names the graph's outputs. jax2onnx names them after the values they hold, and one value can
  be two outputs (the score is the 'recon' component when score.image='recon'): an Identity per
  output gives each its own name."""
  import onnx  # pylint: disable=g-import-not-at-top
  graph = model.graph
  if len(graph.output) != len(names):
    raise RuntimeError(f'jax2onnx gave {len(graph.output)} outputs for {len(names)} names')
  for out, name in zip(graph.output, names):
    graph.node.append(onnx.helper.make_node('Identity', [out.name], [name], name=f'out_{name}'))
    out.name = name
  return model


def _int64(fresh, hint: str, values: list[int]):
  """(a Constant node of int64 `values`, its output's name)."""
  import onnx  # pylint: disable=g-import-not-at-top
  name = fresh(hint)
  return onnx.helper.make_node('Constant', [], [name], value=onnx.helper.make_tensor(
      name, onnx.TensorProto.INT64, [len(values)], values)), name


def _einsum_as_matmul(node, fresh) -> Optional[list]:
  """Nodes computing an Einsum node's product faster, or None when its equation is not one of
  these: jax2onnx lowers a dot_general to MatMul only when it is a plain or batched matrix
  product, any other to Einsum, which onnxruntime runs slowly for a Dense layer on [N, h, w, D]
  ('abcd,de->abce': MatMul broadcasts), and 10x slower for the contraction of the windows of the
  maps' Gaussian blur with its kernel ('abcd,d->abc': MatMul with a [K, 1] column; 'abcd,c->abd':
  Mul and ReduceSum)."""
  import onnx  # pylint: disable=g-import-not-at-top
  make = onnx.helper.make_node
  if node.op_type != 'Einsum' or len(node.input) != 2:
    return None
  equation = next(a.s for a in node.attribute if a.name == 'equation').decode()
  inputs, out = equation.replace(' ', '').split('->')
  lhs, rhs = inputs.split(',')
  if '.' in equation or len(set(lhs)) != len(lhs) or len(rhs) not in (1, 2) or rhs[0] not in lhs:
    return None
  k, (x, v), result = rhs[0], node.input, list(node.output)
  if len(rhs) == 2:
    if rhs[1] in lhs or lhs[-1] != k or out != lhs[:-1] + rhs[1]:
      return None
    return [make('MatMul', [x, v], result, name=node.name)]
  if out != lhs.replace(k, ''):
    return None
  p = lhs.index(k)
  if p == len(lhs) - 1:
    shape, shape_name = _int64(fresh, 'shape', [-1, 1])
    axes, axes_name = _int64(fresh, 'axes', [-1])
    column, product = fresh('column'), fresh('product')
    return [shape, make('Reshape', [v, shape_name], [column]),
            make('MatMul', [x, column], [product]), axes,
            make('Squeeze', [product, axes_name], result, name=node.name)]
  shape, shape_name = _int64(fresh, 'shape', [-1] + [1] * (len(lhs) - p - 1))
  axes, axes_name = _int64(fresh, 'axes', [p])
  vector, scaled = fresh('vector'), fresh('scaled')
  return [shape, make('Reshape', [v, shape_name], [vector]), make('Mul', [x, vector], [scaled]),
          axes, make('ReduceSum', [scaled, axes_name], result, keepdims=0, name=node.name)]


def _fast_products(model):
  """Einsum nodes of the forms `_einsum_as_matmul` knows, replaced in place."""
  graph, nodes = model.graph, list(model.graph.node)
  counter = iter(range(len(nodes) * 8))
  fresh = lambda hint: f'fast_{hint}_{next(counter)}'
  del graph.node[:]
  for node in nodes:
    graph.node.extend(_einsum_as_matmul(node, fresh) or [node])
  return model


def to_onnx(sf: score_function.ScoreFunction, path: pathlib.Path) -> None:
  """model.onnx (see the module doc for why from the jaxpr)."""
  import jax2onnx  # pylint: disable=g-import-not-at-top
  import onnx  # pylint: disable=g-import-not-at-top
  spec = _symbolic_input(sf)
  closed = jax.make_jaxpr(sf.bound())(spec)
  flat = lambda images: _evaluate(closed.jaxpr, closed.consts, images)
  with _quiet('jax2onnx', 'onnx_ir', 'onnx'):
    model = jax2onnx.to_onnx(flat, [spec], model_name='vivano',
                             input_names=[model_dir.INPUT_NAME])
  model = _name_outputs(_fast_products(model), sf.output_names)
  onnx.checker.check_model(model)
  # Protobuf caps a file at 2 GiB: larger weights go to a data file beside it.
  large = model.ByteSize() > 1 << 30
  onnx.save_model(model, str(path), save_as_external_data=large,
                  location=path.name + '.data' if large else None)


def to_saved_model(sf: score_function.ScoreFunction, path: pathlib.Path,
                   platforms: Sequence[str]) -> None:
  """saved_model/ with the 'serving_default' signature (TF Serving's default)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  s, c = sf.image_size, sf.channels
  variables = tf.nest.map_structure(lambda v: tf.Variable(v, trainable=False),
                                    jax.device_get(sf.variables))
  converted = jax2tf.convert(sf.fn, polymorphic_shapes=[None, f'({BATCH}, {s}, {s}, {c})'],
                             with_gradient=False, native_serialization_platforms=tuple(platforms))

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, s, s, c], tf.as_dtype(sf.input_dtype), name=model_dir.INPUT_NAME)])
  def serve(images):
    return dict(zip(sf.output_names, converted(variables, images)))

  module = tf.Module()
  module.weights = tf.nest.flatten(variables)  # Tracked, so saved as variables.
  module.serve = serve
  with _quiet('tensorflow', 'absl'):
    tf.saved_model.save(module, str(path), signatures={model_dir.SERVING_SIGNATURE: serve})


def to_jax(sf: score_function.ScoreFunction, path: pathlib.Path,
           platforms: Sequence[str]) -> None:
  """model.jax: jax.export's serialization (a versioned StableHLO module). Its outputs are a dict
  keyed by output name, so the module itself says which output is which (model_dir checks the
  card against it)."""
  bound, names = sf.bound(), tuple(sf.output_names)
  named = lambda images: dict(zip(names, bound(images)))
  exported = jax_export.export(jax.jit(named), platforms=tuple(platforms))(
      _symbolic_input(sf))
  path.write_bytes(exported.serialize())


_NEEDS = {'onnx': ('jax2onnx', 'onnx', 'onnxruntime'), 'saved_model': ('tensorflow',), 'jax': ()}


def check_available(fmt: str) -> None:
  """A UsageError before anything is loaded when `fmt`'s converter (or the runtime its check
  runs) is not installed."""
  import importlib  # pylint: disable=g-import-not-at-top
  for module in _NEEDS[fmt]:
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise errors.UsageError(f'--format={fmt} needs {module} ({e}): pip install '
                              '"vivano_jax[export]"') from None


def convert(sf: score_function.ScoreFunction, fmt: str, directory: pathlib.Path,
            platforms: Sequence[str]) -> pathlib.Path:
  """Writes `fmt`'s model file into `directory`; returns its path."""
  path = directory / model_dir.FILES[fmt]
  if fmt == 'onnx':
    to_onnx(sf, path)
  elif fmt == 'saved_model':
    to_saved_model(sf, path, platforms)
  else:
    to_jax(sf, path, platforms)
  return path
