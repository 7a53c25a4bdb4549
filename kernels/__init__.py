"""assay.kernels: numeric hot paths, each with a plain numpy or torch reference.

A leaf package: it imports nothing else from assay.
"""
