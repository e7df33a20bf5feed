"""The leaderboard: its tables and rows (``board``), a record's page (``card``, ``html``, ``templates/``), the
plots (``plots``), the files (``leaderboard``) and CI's check that they are up to date (``check``). It imports
``tools.common`` and ``tools.judge``."""
