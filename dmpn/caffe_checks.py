"""Checks, in Python, of what is about to be handed to Caffe.

Caffe meets a bad file with a glog ``CHECK`` or ``LOG(FATAL)``: the whole process aborts
(exit 134, "Check failed" and a stack dump), which no ``try`` catches. Each function here
looks at one input the way Caffe will, and raises :class:`dmpn.imageio.InputError` (a
ValueError) with one line naming the file or value instead, so that a tool's ``run_tool``
turns it into ``PROG: error: ...`` and exit status 2. They return what they parsed, so that
callers need not read the file again.

- :func:`check_prototxt` (path, what, phase) -> NetParameter: a text net Caffe can build
- :func:`check_bottoms`  (param, path, phase): the bottom check of check_prototxt alone
- :func:`check_weights`  (weights, net, net_path) -> NetParameter or None: a .caffemodel (or
  HDF5 weights) whose blobs fit the net (not garbage, not a .solverstate, not another width)
- :func:`check_solverstate` (path) -> SolverState: a snapshot `caffe train -snapshot` can resume
  from (readable, with its .caffemodel present and readable)
- :func:`gpu_count`      () -> (count, reason): CUDA devices this Caffe build can use, counted
  without aborting
- :func:`check_gpu`      (device, option) -> device: a GPU id that exists (None: a flag's GPU 0)
- :func:`check_lmdb`     (path, crop, channels, what) -> (entries, (C, H, W)): a non-empty LMDB of
  Datums with the channel count and at least the size the net's Data layer needs
- :func:`in_phase`       (layer, phase, stages, level): Caffe's FilterNet rule for one layer
"""
from __future__ import annotations

import ctypes
import difflib
import os

from dmpn.cli import read_bytes
from dmpn.datum import ITEM_CHANNELS  # channels of one item of tools/make_lmdb.py
from dmpn.imageio import InputError

__all__ = ["ITEM_CHANNELS", "check_prototxt", "check_bottoms", "check_weights", "check_solverstate",
           "solver_state", "gpu_count", "check_gpu", "check_lmdb",
           "in_phase", "blob_shapes", "mapped_libraries"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _proto():
    from caffe.proto import caffe_pb2
    return caffe_pb2


def _phase_value(phase):
    """caffe_pb2.TRAIN / TEST from "TRAIN", "train", caffe.TRAIN (an int) or caffe_pb2's value."""
    pb = _proto()
    if isinstance(phase, str):
        return pb.Phase.Value(phase.upper())
    return int(phase)


def _meets_rule(rule, phase, stages, level) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def in_phase(layer, phase, stages=(), level: int = 0) -> bool:
    """Whether a LayerParameter is part of the net Caffe builds for ``phase`` (Caffe's
    Net::FilterNet: any exclude rule met leaves it out; with include rules, one must be met).
    ``stages``: the NetState's stages (a prototxt's own ``state { stage: ... }`` is kept)."""
    phase = _phase_value(phase)
    if any(_meets_rule(r, phase, stages, level) for r in layer.exclude):
        return False
    return not layer.include or any(_meets_rule(r, phase, stages, level) for r in layer.include)


def _parse_error_text(exc) -> str:
    """'line N: reason' of a text_format.ParseError."""
    line = exc.GetLine() if hasattr(exc, "GetLine") else None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if line:
        # ParseError's text starts "LINE:COLUMN : " where it knows them
        head, sep, rest = text.partition(" : ")
        if sep and head.replace(":", "").isdigit():
            text = rest
        return f"line {line}: {text}"
    return text


def check_prototxt(path, what: str = "net prototxt", phase="TEST"):
    """The NetParameter of a text prototxt that Caffe can build a net from, or InputError naming
    ``path``: missing, binary (a .caffemodel), a parse error (with its line), a solver prototxt,
    no layer, a layer type this Caffe build lacks, or a bottom no earlier layer of the ``phase``
    net produces (``phase`` None: not checked). Caffe itself would abort on each."""
    from google.protobuf import text_format
    pb = _proto()
    path = os.fspath(path)
    raw = read_bytes(path, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a {what}: a binary file (a .caffemodel or .solverstate?), "
                         "not protobuf text") from None
    param = pb.NetParameter()
    try:
        text_format.Parse(text, param)
    except text_format.ParseError as exc:
        solver = pb.SolverParameter()
        try:
            text_format.Parse(text, solver)
        except text_format.ParseError:
            raise InputError(f"{path}: not a {what} ({_parse_error_text(exc)})") from None
        net = solver.net or solver.train_net or "?"
        raise InputError(f"{path}: a solver prototxt, not a {what} (its net is {net})") from None
    if not param.layer and not param.layers:
        raise InputError(f"{path}: not a {what}: it defines no layer")
    try:
        import caffe
        known = set(caffe.layer_type_list())
    except Exception:  # no pycaffe: the caller's import says so
        known = None
    if known:
        for layer in param.layer:
            if layer.type not in known:
                close = difflib.get_close_matches(layer.type, sorted(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise InputError(f"{path}: layer '{layer.name}' has type '{layer.type}', which this "
                                 f"Caffe build does not have{hint}")
    if phase is not None:
        check_bottoms(param, path, phase)
    return param


def check_bottoms(param, path, phase="TEST") -> None:
    """InputError naming ``path`` (where NetParameter ``param`` was read) when a layer of its
    ``phase`` net takes a bottom that no earlier layer produces (Caffe aborts on it); the second
    half of check_prototxt, for a caller that has looked at the parsed net first."""
    if not param.layer:
        return
    stages = set(param.state.stage)
    # pycaffe's Net(path, phase) builds at level 0 whatever the prototxt's state says (it sets
    # the level, and keeps the prototxt's stages), as dmpn.bn_stats.check_data_layers assumes
    level = 0
    blobs = set(param.input)
    for layer in param.layer:
        if not in_phase(layer, phase, stages, level):
            continue
        for bottom in layer.bottom:
            if bottom not in blobs:
                name = _proto().Phase.Name(_phase_value(phase))
                raise InputError(f"{path}: layer '{layer.name}' takes bottom '{bottom}', which no "
                                 f"earlier layer of its {name} net produces")
        blobs.update(layer.top)


def _shape_text(shape) -> str:
    return " x ".join(str(d) for d in shape) if shape else "(scalar)"


def _legacy(blob) -> bool:
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def _source_shape(blob):
    if _legacy(blob):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def _shape_equals(target, blob) -> bool:
    """Caffe's Blob::ShapeEquals(BlobProto): legacy 4-D blobs compare from the last axis."""
    if _legacy(blob):
        if len(target) > 4:
            return False
        padded = (1,) * (4 - len(target)) + tuple(target)
        return padded == _source_shape(blob)
    return tuple(target) == tuple(blob.shape.dim)


def blob_shapes(net) -> dict:
    """{layer name: [shape of each parameter blob]} of a pycaffe net, in net order (layers
    without parameters included, with [])."""
    return {name: [tuple(b.data.shape) for b in layer.blobs]
            for name, layer in zip(net._layer_names, net.layers)}


def solver_state(raw):
    """The SolverState ``raw`` holds, or None when it is not one."""
    from google.protobuf.message import DecodeError
    state = _proto().SolverState()
    try:
        state.ParseFromString(raw)
    except DecodeError:
        return None
    return state if (len(state.history) or state.learned_net) else None


def _binary_layers(weights, raw, what):
    """The layers of a binary .caffemodel as [(name, [(source shape, fits(target shape), values
    held)])], or InputError naming what ``raw`` is instead (garbage, a .solverstate, a prototxt)."""
    from google.protobuf.message import DecodeError
    pb = _proto()
    param = pb.NetParameter()
    try:
        param.ParseFromString(raw)
        parsed = True
    except DecodeError:
        parsed = False
    layers = list(param.layer) + list(param.layers) if parsed else []
    if not layers:
        state = solver_state(raw)
        if state is not None:
            model = f" ({state.learned_net})" if state.learned_net else ""
            raise InputError(f"{weights}: a Caffe solver state (.solverstate, iteration {state.iter}), "
                             f"not {what}: give the .caffemodel of that snapshot{model}")
        try:
            from google.protobuf import text_format
            text_format.Parse(raw.decode("utf-8"), pb.NetParameter())
            kind = "a text prototxt"
        except Exception:
            kind = "not a NetParameter in protobuf binary format"
        if parsed and kind.startswith("not"):
            kind = "it holds no layer"
        raise InputError(f"{weights}: not a Caffe .caffemodel ({kind})")
    return param, [(layer.name, [(_source_shape(b), lambda shape, b=b: _shape_equals(shape, b),
                                  len(b.double_data) or len(b.data)) for b in layer.blobs])
                   for layer in layers]


def _shared_blobs(net) -> dict:
    """{layer name: [whether parameter j shares its data with an earlier layer's]} of a pycaffe
    net: Caffe's HDF5 weights hold only the parameters a layer owns (Net::ToHDF5)."""
    seen, shared = set(), {}
    for name, layer in zip(net._layer_names, net.layers):
        pointers = [b.data.ctypes.data for b in layer.blobs]
        shared[name] = [p in seen for p in pointers]
        seen.update(pointers)
    return shared


def _hdf5_layers(weights, shared):
    """The layers of Caffe's HDF5 weights (Net::ToHDF5: group data/LAYER, datasets 0, 1, ...)
    that are layers of the net, as _binary_layers gives them, read as CopyTrainedLayersFromHDF5
    reads them: other groups are ignored; a layer may hold at most as many datasets as the net's
    layer has parameters, and lack dataset j only where parameter j is shared (``shared``, from
    _shared_blobs: None stands for it); a dataset must be numeric."""
    import h5py
    try:
        f = h5py.File(weights, "r")
    except OSError as exc:
        raise InputError(f"{weights}: not a readable HDF5 file ({exc})") from None
    with f:
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise InputError(f"{weights}: an HDF5 file without the group 'data' of Caffe's HDF5 weights")
        layers = []
        for name, group in data.items():
            if name not in shared:
                continue  # Caffe ignores it
            if not isinstance(group, h5py.Group):
                raise InputError(f"{weights}: data/{name} is not a group of parameter datasets")
            if len(group) > len(shared[name]):  # check_weights names both counts
                layers.append((name, [None] * len(group)))
                continue
            blobs = []
            for j, is_shared in enumerate(shared[name]):
                ds = group.get(str(j))
                if ds is None and is_shared:
                    blobs.append(None)
                    continue
                if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
                    raise InputError(f"{weights}: data/{name} holds {sorted(group)} where Caffe reads "
                                     f"numeric datasets {', '.join(map(str, range(len(shared[name]))))}")
                blobs.append((tuple(ds.shape), lambda shape, s=tuple(ds.shape): tuple(shape) == s, ds.size))
            layers.append((name, blobs))
    return layers


def _is_hdf5(raw) -> bool:
    """Whether ``raw`` is an HDF5 file as H5Fis_hdf5 (Caffe's test) finds one: the signature at
    offset 0, 512, 1024, 2048, ... (after a user block)."""
    offset = 0
    while offset + len(_HDF5_SIGNATURE) <= len(raw):
        if raw[offset:offset + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else 2 * offset
    return False


def check_weights(weights, net, net_path=None, what: str = "weights"):
    """The parameters of a .caffemodel (or Caffe's HDF5 weights, a .caffemodel.h5) that Caffe
    can copy into ``net`` (a pycaffe Net, or the path of a net prototxt, which is then checked
    and built in the TEST phase), or InputError naming ``weights``: missing, not a binary
    NetParameter (garbage, a prototxt), a .solverstate (its .caffemodel is named), no layer of
    the net in it, or a layer whose blob count or shapes differ from the net's (both shapes
    named: e.g. a net of another width). ``net_path`` names the net in messages. Returns the
    NetParameter of a binary file, None for HDF5 weights."""
    weights = os.fspath(weights)
    raw = read_bytes(weights, what)
    if isinstance(net, (str, os.PathLike)):
        net_path = os.fspath(net) if net_path is None else net_path
        check_prototxt(net)
        import caffe
        net = caffe.Net(os.fspath(net), caffe.TEST)
    target = blob_shapes(net)
    where = f"the net {net_path}" if net_path else "the net"
    if _is_hdf5(raw):
        param, layers = None, _hdf5_layers(weights, _shared_blobs(net))
    else:
        param, layers = _binary_layers(weights, raw, what)
    matched = 0
    for name, blobs in layers:
        if name not in target:
            continue
        shapes = target[name]
        if len(shapes) != len(blobs):
            raise InputError(f"{weights}: layer '{name}' has {len(blobs)} parameter blobs, "
                             f"{where} has {len(shapes)} there (a layer of another type?)")
        for j, (shape, blob) in enumerate(zip(shapes, blobs)):
            if blob is None:  # HDF5: a shared parameter its owner holds
                continue
            source_shape, fits, held = blob
            if not fits(shape):
                raise InputError(f"{weights}: layer '{name}' parameter {j} has shape "
                                 f"{_shape_text(source_shape)}, {where} wants "
                                 f"{_shape_text(shape)}: weights of another net (another width?)")
            count = 1
            for d in shape:
                count *= d
            if held != count:
                raise InputError(f"{weights}: layer '{name}' parameter {j} holds {held} values "
                                 f"for its shape {_shape_text(shape)} ({count}): a damaged file")
        matched += bool(shapes)
    if not matched and any(target.values()):
        names = ", ".join(f"'{name}'" for name, _ in layers[:3])
        raise InputError(f"{weights}: none of its {len(layers)} layers ({names}{', ...' if len(layers) > 3 else ''}) "
                         f"is a layer with parameters of {where}: weights of another net")
    return param


def check_solverstate(path):
    """The SolverState of a snapshot that `caffe train -snapshot` can resume from, or InputError
    naming the file: not a solver state (e.g. a damaged snapshot of a run killed while writing
    it), or its learned_net (the snapshot's .caffemodel, which Caffe reads too; relative to the
    current folder, as Caffe reads it) missing or not a .caffemodel."""
    from google.protobuf.message import DecodeError
    path = os.fspath(path)
    raw = read_bytes(path, "solver state")
    state = solver_state(raw)
    again = "delete it and its .caffemodel to resume from the snapshot before, or train afresh"
    if state is None:
        raise InputError(f"{path}: not a readable Caffe solver state (a damaged snapshot?): {again}")
    if state.learned_net:
        model = state.learned_net
        if not os.path.isfile(model):
            raise InputError(f"{path}: the weights of this snapshot, {model}, are missing: {again}")
        param = _proto().NetParameter()
        try:
            param.ParseFromString(read_bytes(model, "weights"))
        except DecodeError:
            param = None
        if param is None or not (param.layer or param.layers):
            raise InputError(f"{model}: not a readable .caffemodel (the weights of the snapshot {path}): "
                             f"{again}")
    return state


# ------------------------------------------------------------------------------------ GPUs
def mapped_libraries(maps: str = "/proc/self/maps") -> set:
    """The paths of the shared objects mapped into this process (empty where /proc is not)."""
    paths = set()
    try:
        with open(maps) as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) == 6 and ".so" in os.path.basename(fields[5]):
                    paths.add(fields[5].strip().removesuffix(" (deleted)"))
    except OSError:
        pass
    return paths


def _mapped(prefix: str, maps: str = "/proc/self/maps"):
    """Paths of the shared libraries named ``prefix``* that this process has mapped, sorted."""
    return sorted(p for p in mapped_libraries(maps) if os.path.basename(p).startswith(prefix))


def gpu_count():
    """(number of CUDA devices Caffe's CUDA runtime sees, None) or (0, reason), found without
    aborting: cudaGetDeviceCount of the libcudart that pycaffe loaded (as Caffe numbers them,
    after CUDA_VISIBLE_DEVICES)."""
    try:
        import caffe  # noqa: F401  (maps Caffe's CUDA runtime into the process)
    except Exception as exc:
        return 0, f"pycaffe does not import: {exc}"
    # Only the runtime Caffe itself mapped: a system libcudart beside a CPU_ONLY Caffe would
    # count GPUs that Caffe cannot use (set_device would abort).
    paths = _mapped("libcudart")
    lib = None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError:
            continue
    if lib is None or not hasattr(lib, "cudaGetDeviceCount"):
        return 0, "this Caffe build has no CUDA runtime (built CPU_ONLY)"
    n = ctypes.c_int(0)
    rc = lib.cudaGetDeviceCount(ctypes.byref(n))
    if rc != 0:
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        reason = (lib.cudaGetErrorString(rc) or b"error %d" % rc).decode(errors="replace")
        try:
            ctypes.CDLL("libcuda.so.1")
        except OSError:
            reason = f"no NVIDIA driver (libcuda.so.1 not found); CUDA says: {reason}"
        return 0, reason
    return n.value, None


def check_gpu(device, option: str = "--gpu", cpu_fallback: bool = True) -> int:
    """``device`` as an int when a CUDA device with that id exists for Caffe, else InputError
    naming ``option`` and the value and saying how many GPUs there are (Caffe's set_device
    would abort the process). ``device`` None: GPU 0 for an ``option`` that is a flag taking
    no id (named alone); ``cpu_fallback``: whether leaving out ``option`` runs on the CPU
    instead (the message says so)."""
    named = option if device is None else f"{option} {device}"
    try:
        device = 0 if device is None else int(device)
    except (TypeError, ValueError):
        raise InputError(f"{named}: expected a GPU id (a whole number >= 0)") from None
    if device < 0:
        raise InputError(f"{named}: GPU ids start at 0")
    count, reason = gpu_count()
    if count == 0:
        hint = f"; leave out {option} to run on the CPU" if cpu_fallback else ""
        raise InputError(f"{named}: this machine has no GPU that Caffe can use ({reason}){hint}")
    if device >= count:
        ids = "id 0" if count == 1 else f"ids 0 to {count - 1}"
        raise InputError(f"{named}: this machine has {count} GPU{'s' if count > 1 else ''} "
                         f"({ids})")
    return device


# ------------------------------------------------------------------------------------ LMDB
def check_lmdb(path, crop=None, channels=ITEM_CHANNELS, what: str = "LMDB"):
    """(entries, (C, H, W) of the first item) of an LMDB that Caffe's Data layer can read, or
    InputError naming ``path``: missing, not a folder holding an LMDB (data.mdb), empty, a first
    item that is not a Datum, with other than ``channels`` channels (None: not checked), or
    smaller than ``crop`` (the Data layer's crop_size; None or 0: not checked)."""
    import lmdb
    from dmpn.datum import DatumError, decode_datum_fields
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such {what}")
    if not os.path.isdir(path):
        raise InputError(f"{path}: not an {what}: a file, where Caffe wants a folder holding data.mdb")
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        raise InputError(f"{path}: not an {what}: the folder holds no data.mdb")
    try:
        env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    except lmdb.Error as exc:
        raise InputError(f"{path}: not a readable {what} ({exc})") from None
    try:
        entries = env.stat()["entries"]
        if entries == 0:
            raise InputError(f"{path}: the {what} is empty (no items)")
        with env.begin() as txn, txn.cursor() as cur:
            cur.first()
            key, value = bytes(cur.key()), bytes(cur.value())
    except lmdb.Error as exc:
        raise InputError(f"{path}: not a readable {what} ({exc})") from None
    finally:
        env.close()
    name = key.decode("ascii", "replace")
    try:
        f = decode_datum_fields(value)
    except DatumError as exc:
        raise InputError(f"{path}: item '{name}' is not a Caffe Datum ({exc})") from None
    c, h, w = f.get("channels", 0), f.get("height", 0), f.get("width", 0)
    if not f.get("encoded"):
        if c <= 0 or h <= 0 or w <= 0:
            raise InputError(f"{path}: item '{name}' is not a Caffe Datum image (shape {c} x {h} x {w})")
        size = len(f["data"]) if f["data"] else len(f["float_data"])
        if size != c * h * w:
            raise InputError(f"{path}: item '{name}' holds {size} values for {c} x {h} x {w}: a damaged item")
        if channels is not None and c != channels:
            raise InputError(f"{path}: items have {c} channels (item '{name}'); the net reads "
                             f"{channels} (image RGB, trimap, alpha, foreground RGB, background RGB: "
                             "tools/make_lmdb.py's items)" if channels == ITEM_CHANNELS else
                             f"{path}: items have {c} channels (item '{name}'); the net reads {channels}")
        if crop and (h < crop or w < crop):
            raise InputError(f"{path}: items are {h} x {w} (item '{name}'), smaller than the net's "
                             f"{crop} x {crop} crop: build the LMDB with a larger --size, or use a "
                             "net with a smaller crop")
    return entries, (c, h, w)
