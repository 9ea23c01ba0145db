"""Storage, by aggregate behind one seam.

- ``interface``: the ``Storage`` and ``Tx`` Protocols the program is written against, and
  their contract;
- ``sqlite``: the SQLite backend composing the aggregates (``SqliteStore``, ``SqliteTx``);
- ``threads``, ``messages``, ``forum``, ``runs``, ``journal``, ``wakes``: each aggregate's row
  mapping, its writes (inside a transaction) and its reads, in SQL;
- ``engine``: connections, the writer thread with group commit, readers, the migration
  runner (domain-free); ``migrations``: the schema; ``identity``: which process owns a run;
  ``columns``: JSON text columns.
"""
