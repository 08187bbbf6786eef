from setuptools import find_packages, setup

setup(
    name="srn-d2",
    version="0.1.0",
    description="Selective Refinement Network (SRN) face detector as a Detectron2 extension",
    license="Apache-2.0",
    packages=find_packages(include=["srn_d2", "srn_d2.*"]),
    python_requires=">=3.10",
    # torch, torchvision and detectron2 are installed by the Makefile: detectron2
    # is not on PyPI under its own name (see README, Install).
    install_requires=["numpy", "scipy", "opencv-python-headless", "matplotlib", "tqdm", "fvcore"],
    extras_require={"test": ["pytest", "pytest-timeout"]},
)
