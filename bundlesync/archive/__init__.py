"""Archives: incremental backups of a store as self-describing snapshots.

``model`` is the contract between the writer (``bundlesync backup``) and the
readers (``snapshots``, ``check``, ``restore``, ``view``): what one snapshot says
about one user's mail, independent of how the archive lays it out on disk.
"""
