"""Parsing and checking of ``python_param { param_str: ... }`` for our Python layers.

param_str is a JSON object whose keys are the fields of the C++ layer's typed parameter
message (caffe.proto), with the same defaults, e.g. ``'{"c": 0.8, "shrink": 1}'``. The values
are held to the C++ layer's rules (its LayerSetUp), with messages that name the layer and the
value. pycaffe does not tell a Python layer its name (PythonLayer sets only param_str and
phase), so the messages name the layer's type; a ``name`` attribute, where one is set, is named
too.
"""
import json
import math
import numbers

import numpy as np

from dmpn.propagation import is_whole


def layer_label(layer):
    """'<type> Python layer' (and its name where known), the start of the layer's messages."""
    kind = getattr(layer, "TYPE", type(layer).__name__)
    name = getattr(layer, "name", "")
    return f"{kind} Python layer" + (f" '{name}'" if isinstance(name, str) and name else "")


def parse_param_str(layer, defaults):
    text = (layer.param_str or "").strip()
    try:
        given = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{layer_label(layer)}: param_str is not a JSON object: {text!r} ({e})")
    if not isinstance(given, dict):
        raise ValueError(f"{layer_label(layer)}: param_str must be a JSON object, got {text!r}")
    return with_defaults(given, defaults, f"{layer_label(layer)}: unknown parameter(s)")


def with_defaults(given, defaults, unknown_message):
    """``defaults`` updated with ``given``; a key of ``given`` not in ``defaults`` is a
    ValueError: ``unknown_message`` followed by the unknown and the known keys."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"{unknown_message} {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **given}


def _refuse(layer, key, value, rule):
    raise ValueError(f"{layer_label(layer)}: {key} must be {rule}, got {value!r}")


def finite_param(layer, key, value, above=None, minimum=None, maximum=None, why=""):
    """``value`` (param ``key``) as a float: a finite number (not a bool or a string), > above,
    >= minimum and <= maximum where given; otherwise a ValueError naming the layer, the key and
    the value, ending with ``why``. The rules are judged on the value rounded to float32, the type
    of the C++ layer's field, as the C++ layer judges it: 1e39 (inf there) or an eps of 1e-50 (0
    there) is refused by both flavours alike, 80.000001 (80 there) accepted by both."""
    rule = "a finite number" + (f" > {above:g}" if above is not None else "") \
        + (f" >= {minimum:g}" if minimum is not None else "") \
        + (f" and <= {maximum:g}" if maximum is not None else "") + why
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not _finite(value):
        _refuse(layer, key, value, rule)
    with np.errstate(over="ignore"):
        as_float = float(np.float32(value))
    if not math.isfinite(as_float) or (above is not None and not as_float > above) \
            or (minimum is not None and not as_float >= minimum) \
            or (maximum is not None and not as_float <= maximum):
        shown = "" if as_float == value else f" (as float32, the C++ field's type, it is {as_float:g})"
        _refuse(layer, key, value, rule + shown)
    return float(value)


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float64's range
        return False


# The C++ layers' whole-number fields are uint32 (caffe.proto).
UINT32_MAX = 2 ** 32 - 1


# Caffe's blob dimensions are int.
INT32_MAX = 2 ** 31 - 1


def whole_param(layer, key, value, minimum, maximum=UINT32_MAX):
    """``value`` (param ``key``) as an int: a whole number from minimum to maximum (2.0
    counts, 2.5, NaN, a bool, a string or 2**32 do not); otherwise a ValueError naming the
    layer, the key and the value."""
    if not (is_whole(value, minimum) and value <= maximum):
        _refuse(layer, key, value, f"a whole number from {minimum} to {maximum}")
    return int(value)


def check_not_empty(layer, bottom):
    """Each bottom holds at least one value: an empty batch (or an empty grid) is a ValueError
    naming the layer and the bottom, as the C++ layers' Reshape says it (CheckBottomsNotEmpty).
    Reads the shapes only: the data of an empty blob does not exist."""
    for i in range(len(bottom)):
        shape = tuple(bottom[i].shape)
        if not all(shape):
            raise ValueError(f"{layer_label(layer)}: bottom[{i}] is empty "
                             f"({' x '.join(map(str, shape))}): a batch needs at least one item")
