"""ssenet: weakly supervised semantic segmentation with scale-equivariant class activation maps."""

__version__ = "0.1.0"
