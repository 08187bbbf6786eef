from setuptools import find_packages, setup

setup(
    name="srn-d2",
    version="0.2.0",
    description="Selective Refinement Network (SRN) face detector as a Detectron2 extension",
    license="Apache-2.0",
    packages=find_packages(include=["srn_d2", "srn_d2.*"]),
    # The configs ship inside the package (srn_d2.model_zoo.get_config_file).
    package_data={
        "srn_d2": ["configs/*.yaml", "configs/*.py", "configs/common/*.py", "configs/common/*/*.py"]
    },
    python_requires=">=3.10",
    # torch, torchvision and detectron2 are installed by the Makefile: detectron2
    # is not on PyPI under its own name (see README, Install).
    install_requires=[
        "numpy",
        "scipy",
        "opencv-python-headless",
        "matplotlib",
        "tqdm",
        "fvcore",
        "tabulate",
        "timm>=1.0",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "filelock", "hypothesis", "ruff"],
        # srn_d2.tools.export and srn_d2.deploy.onnx_runtime.
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
    },
)
