"""The HTTP service: pygeoapi wired to the CIM database, plus our own routes."""
