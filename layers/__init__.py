"""pycaffe Python layers of DeepMattePropNet (mirror the C++ layers in ``cuda/``)."""
