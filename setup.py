"""erpo-verl: entropy-aware token-level advantage estimators (ERPO, EP-GRPO) as a verl 0.9.1 plugin."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# one source of truth: erpo_verl.VERL_VERSION (see REQUIRED_VERL.txt: the plugin hooks verl internals that change
# between releases); read from the file, setup.py cannot import the package before it is installed
VERL_PIN = re.search(r'^VERL_VERSION = "([^"]+)"', (HERE / "erpo_verl" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="erpo-verl",
    version="0.1.0",
    description="ERPO / EP-GRPO entropy-aware advantage estimators for verl (plugin, no fork)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["erpo_verl", "erpo_verl.*", "data_prep", "data_prep.*"]),
    include_package_data=True,
    install_requires=[
        # torch is deliberately unpinned: install the build that fits your machine first (CPU wheel or CUDA).
        "torch",
        f"verl[verl-core]=={VERL_PIN}",
        "numpy>=2.0",
        "pandas",
        "pyarrow>=19.0.0",
        "omegaconf",
        "hydra-core",
        "ray",
        "transformers",
        "tokenizers",
        "tensordict",
        "math-verify==0.9.0",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # GPU clusters only. Never install this on a CPU machine: it pins a CUDA torch, vllm and flash-attn.
        "gpu": [f"verl[vllm,fsdp]=={VERL_PIN}"],
        "test": ["pytest>=8", "pytest-timeout", "hypothesis>=6"],
    },
    entry_points={
        # verl imports every module of this group on `import verl`, in the driver and in every Ray worker.
        "verl.plugins": ["erpo_verl = erpo_verl.integration.register"],
        "console_scripts": [
            "erpo-verl = erpo_verl.tools.cli:main",
            "erpo-data = data_prep.__main__:main",
            "erpo-eval = erpo_verl.eval.cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
