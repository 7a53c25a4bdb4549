"""assay.engine: the domain of assay, with no heavy dependencies.

Records, taxonomies, suites and their importers, the run folder and its Parquet sink, judge prompt
formats and parsers, metrics and the service client live here. Nothing in this package imports ray,
torch or vllm at module import time (ruff's banned-api rule enforces it), so ``import assay.engine``
stays light for users who only read results or call a service.

Dependencies point one way: ``cluster -> actors -> engine``; ``kernels`` is a leaf.
"""

__version__ = "0.1.0"
