"""The appliance: an offline MLOps loop on one GPU server."""

__version__ = "0.1.0"
