"""Benchmarks: bundlesync side by side with ``rsync -a`` and ``doveadm backup``.

* :mod:`benchmarks.generate` writes a deterministic, realistic multi-user
  Maildir++ store as Dovecot lays it out.
* :mod:`benchmarks.mutate` applies a "1 % change" to such a store (flag
  changes, expunges, moves, deliveries, a folder rename), deterministic by seed.
* :mod:`benchmarks.run` measures the three tools on one generated store and
  prints a Markdown table (``--json`` for scripts).

None of this is a timed test: the numbers go into ``docs/performance.md``.
"""
