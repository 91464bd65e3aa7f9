"""DeepMattePropNet: deep propagation based image matting (Wang et al., IJCAI 2018), in Caffe.

Importable code behind the command-line tools in ``tools/``; the pycaffe Python layers live in
``dmpn.layers`` (the repository's ``layers/`` folder).
"""

__version__ = "0.1.0"
