"""jaxghpo: guided hybrid policy optimisation (GHPO) for RLVR in JAX."""
from setuptools import find_packages, setup

setup(
    name="jaxghpo",
    version="0.1.0",
    description="RL from verifiable rewards in JAX, with solution-trace hints for problems the model cannot yet solve (GHPO).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["jaxghpo", "jaxghpo.*"]),
    include_package_data=True,
    package_data={"jaxghpo": ["assets/**/*", "assets/*/*", "assets/*"]},
    install_requires=[
        "jax>=0.8.0",
        "flax>=0.12.0",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.0",
        "transformers>=4.56",
        "tensorflow-datasets>=4.9.9",
        "array-record>=0.8.0",
        "grain>=0.2.12",
        "ml-collections>=1.1.0",
        # math-verify's [antlr4_13_2] extra names an extra of latex2sympy2_extended that pip's extra-name
        # normalisation does not find ("does not provide the extra"): the parser runtime it pins, named directly.
        "math-verify>=0.8.0",
        "antlr4-python3-runtime==4.13.2",
        "jinja2>=3.1",
        "safetensors>=0.6",
        "ml-dtypes>=0.5",
        "numpy>=1.26",
        "absl-py>=2.1",
        "matplotlib>=3.8",
        "pyarrow>=16",
        "tensorboardX>=2.6",
        "etils[epath]>=1.7",  # run files through jaxghpo/paths.py: local paths and gs:// workdirs
        "gcsfs>=2024.2",  # epath's gs:// backend without TensorFlow
        "importlib_resources>=6",  # tensorflow-datasets builders need it but do not declare it
        "portpicker>=1.6",
        "psutil>=5.9",
        "pebble>=5.1",  # rewards/pool.py: process pool with per-task hard timeouts
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "torch==2.13.0"],
        # libtpu: XLA:TPU compiles for a named TPU slice on any host (tools/compile_tpu.py, --dry_run_slice),
        # and runs on TPU VMs; the version follows the installed jax.
        "tpu": ["jax[tpu]"],
    },
)
