"""Installs DeepMattePropNet's Python side (``dmpn`` and its pycaffe layers ``dmpn.layers``).

pycaffe itself is built from BVLC source by ``tools/setup.sh`` and installed beside this package.
"""
from setuptools import setup

setup(
    name="deepmattepropnet",
    version="0.1.0",
    description="Deep propagation based image matting (IJCAI 2018) in BVLC Caffe",
    packages=["dmpn", "dmpn.layers"],
    package_dir={"dmpn": "dmpn", "dmpn.layers": "layers"},
    python_requires=">=3.9",
    install_requires=[
        "numpy",
        "scipy",
        "scikit-image",
        "tqdm",
        "lmdb",
        "protobuf>=3.20,<6",
        "six",
        "pymatting",
        "matplotlib",
        "pypng",
        "h5py",  # Caffe's HDF5 weights (.caffemodel.h5) are checked before Caffe reads them
    ],
    extras_require={"test": ["pytest"]},
)
