"""streamherd: a Kubernetes operator that runs Redis Streams consumer groups."""

__version__ = "0.1.0"
