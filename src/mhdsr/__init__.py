"""mhdsr: flow-matching super-resolution of 2D MRI shearing-box MHD turbulence (AthenaK).

Pipeline (one subpackage per stage)::

    athenak (reader) -> shard_builder -> train -> sample -> eval ; launch wraps train/sample
"""

__version__ = "0.1.0"
