"""Benchmarks: bundlesync side by side with ``rsync -a`` and ``doveadm backup``.

* :mod:`benchmarks.generate` writes a deterministic, realistic multi-user
  Maildir++ store as Dovecot lays it out.
* :mod:`benchmarks.mutate` applies a "1 % change" to such a store (flag
  changes, expunges, moves, deliveries, a folder rename), deterministic by seed.
* :mod:`benchmarks.run` measures the three tools on one generated store and
  prints a Markdown table (``--json`` for scripts).
* :mod:`benchmarks.scaling` measures bundlesync's cost per message as one
  folder grows (10,000 to 100,000 messages) against the linearity target.
* :mod:`benchmarks.profile` shows where each phase's time goes: CPU, imports,
  SQL statements, system calls and syncs, zstd, crypto and hashing.

None of this is a timed test: the numbers go into ``docs/performance.md``.
"""
