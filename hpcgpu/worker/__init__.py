"""Code that runs inside each rank. Imports torch.

The helper API for user scripts lives in hpcgpu.worker.api and is re-exported by hpcgpu.dist.
"""
