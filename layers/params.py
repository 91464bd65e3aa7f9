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
    return with_defaults(given, defaults, f"{type(layer).__name__}: unknown parameter(s)")


def with_defaults(given, defaults, unknown_message):
    """``defaults`` updated with ``given``; a key of ``given`` not in ``defaults`` is a
    ValueError: ``unknown_message`` followed by the unknown and the known keys."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"{unknown_message} {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **given}
