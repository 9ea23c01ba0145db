"""Storage, by aggregate behind one seam.

- ``interface``: the ``Storage`` and ``Tx`` Protocols the program is written against, and
  their contract;
- ``aggregates``: the store composed of the aggregates over any engine (``SqlStore``);
- ``sqlite``: the SQLite backend (``SqliteStore``, ``SqliteTx``); ``postgres``: the PostgreSQL
  backend (``PostgresStore``, over psycopg 3), its SQL rendered by ``pg_dialect``;
- ``threads``, ``messages``, ``forum``, ``runs``, ``journal``, ``wakes``, ``beats``: each
  aggregate's row mapping, its writes (inside a transaction) and its reads, in SQL;
- ``engine``: group commit in a writer thread (``Engine``, any backend), and SQLite's
  connections, readers and migration runner (domain-free); ``migrations``: the schema;
  ``identity``: which process owns a run; ``columns``: JSON text columns.
"""
