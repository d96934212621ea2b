"""bundlesync: replicate mail stores between sites with no network between them."""

__version__ = "0.1.0"
