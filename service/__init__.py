"""vendorsync: incremental pulls from vendor APIs into a SQL staging database."""

__version__ = "0.1.0"
