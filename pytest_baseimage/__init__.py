"""pytest-baseimage: can this Docker image be an Azure ML inference base image?"""

__version__ = "0.1.0"
