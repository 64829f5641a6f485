from setuptools import find_packages, setup

setup(
    name="evad-d2",
    version="0.1.0",
    description="EVAD (efficient video action detection, ICCV 2023) as a detectron2 extension",
    packages=find_packages(include=["evad_d2", "evad_d2.*"]),
    python_requires=">=3.9",
    # detectron2 is not on PyPI: scripts/setup_env.sh installs it (see README).
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore",
        "iopath",
        "timm>=0.9",
        "av>=12",
        "scipy>=1.10",
        "pyarrow>=14,<23",
        "safetensors",
        "matplotlib",
        "tqdm",
    ],
    # Deployment only (ONNX export and ONNX Runtime; imported lazily): pip install 'evad-d2[onnx]'.
    extras_require={"onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.3"]},
)
