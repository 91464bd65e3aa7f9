"""Parsing of ``python_param { param_str: ... }`` for our Python layers.

param_str is a JSON object whose keys are the fields of the C++ layer's typed parameter
message (caffe.proto), with the same defaults, e.g. ``'{"c": 0.8, "shrink": 1}'``.
"""
import json


def parse_param_str(layer, defaults):
    text = (layer.param_str or "").strip()
    try:
        given = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{type(layer).__name__}: param_str is not a JSON object: {text!r} ({e})")
    if not isinstance(given, dict):
        raise ValueError(f"{type(layer).__name__}: param_str must be a JSON object, got {text!r}")
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"{type(layer).__name__}: unknown parameter(s) {sorted(unknown)}; "
                         f"known: {sorted(defaults)}")
    out = dict(defaults)
    out.update(given)
    return out
