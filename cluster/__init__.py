"""assay.cluster: scheduling, executors, placement, job submission, and the composition root.

The command line (:mod:`assay.cluster.cli`) and the public run API sit here, at the top of the
dependency graph (``cluster -> actors -> engine``), because they compose all the other packages.
Putting them in ``engine`` would need a lazily filled registry to reach executors and backends;
here they can import what they compose directly, while ``engine`` stays free of ray, torch and
vllm. Modules in this package import ray inside functions, not at module import time, so
``assay --help`` and the suite commands start fast.
"""
