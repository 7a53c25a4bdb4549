"""Model backends: one small interface, a list of requests in, the same number of results out.

Backends register lazily by name (``fake``, ``transformers``, ``vllm``, ``openai``); a backend's
heavy imports (torch, vllm, httpx) happen only when it is built. Packages add backends through the
``assay.backends`` entry-point group.
"""

from .base import BackendSpec, ModelBackend, backend_names, create_backend, register_backend

__all__ = ["BackendSpec", "ModelBackend", "backend_names", "create_backend", "register_backend"]
