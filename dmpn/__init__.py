"""DeepMattePropNet: deep propagation based image matting (Wang et al., IJCAI 2018), in Caffe.

Importable code behind the command-line tools in ``tools/``; the pycaffe Python layers live in
``dmpn.layers`` (the repository's ``layers/`` folder).
"""

__version__ = "0.1.0"


def _checkout_layers():
    """In a checkout, ``dmpn.layers`` is the repository's ``layers/`` beside this package
    (setup.py's package_dir), registered here so that the layers always come from the same
    clone as the rest of dmpn: a tool puts its own clone first on sys.path, and an editable
    install (or none, as in the GPU bundle) would otherwise find another clone's layers, or
    none. An installed copy (layers/ inside the package) imports as usual."""
    import importlib.util
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    layers = os.path.join(os.path.dirname(here), "layers")
    init = os.path.join(layers, "__init__.py")
    if os.path.isdir(os.path.join(here, "layers")) or not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location(__name__ + ".layers", init,
                                                  submodule_search_locations=[layers])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    globals()["layers"] = module  # as the import system sets a subpackage on its parent


_checkout_layers()
