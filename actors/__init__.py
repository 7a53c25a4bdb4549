"""assay.actors: model backends and the Ray actors that host them.

The only package that imports vllm. Depends on ``assay.engine`` (records, judge formats) and
never on ``assay.cluster``.
"""
